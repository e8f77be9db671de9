#!/usr/bin/env bash
# The packages the GPU script carries, packed into .whl/site.tar.xz (ignored by
# git): exactly bench/gpu/wheels.lock's versions as CPython 3.12 wheels,
# installed into one folder, pruned and xz-compressed to fit the 64 MiB a
# device call carries (bench/gpu/wheels.py says how; minutes the first time,
# cached under /tmp/lorascope-wheels after that). Run with the project venv:
#   .venv/bin/python bench/gpu/wheels.py lock   # only after a pin changed
#   bash bench/gpu/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-.venv/bin/python}" bench/gpu/wheels.py pack
