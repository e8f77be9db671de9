#!/usr/bin/env bash
# Wheels the lent GPU machine's image lacks, for its Python 3.12, into .whl/
# (gitignore it locally: echo /.whl/ >> .git/info/exclude). The image already
# has torch, transformers, accelerate, peft, datasets' and pandas' stack,
# numpy, safetensors, jinja2, matplotlib (device README, KINDS.md); this list
# is lorascope's other direct and transitive needs. --no-deps: each is named.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform any)
pkgs=(snakemake==9.27.1 snakemake-interface-common snakemake-interface-executor-plugins
      snakemake-interface-logger-plugins snakemake-interface-report-plugins
      snakemake-interface-scheduler-plugins snakemake-interface-storage-plugins
      conda-inject configargparse connection_pool docutils dpath gitpython gitdb smmap
      humanfriendly immutables nbformat fastjsonschema jupyter-core traitlets pulp
      smart-open sqlmodel sqlalchemy greenlet pydantic pydantic-core throttler yte
      argparse-dataclass reretry trl==1.16.0 sae-lens==6.54.12 babe nltk plotly
      plotly-express simple-parsing python-dotenv transformer-lens jaxtyping
      polars==2.1.0 polars-runtime-32 math-verify==0.9.0 latex2sympy2_extended
      antlr4-python3-runtime==4.13.2 jsonschema==4.26.0 jsonschema-specifications
      referencing rpds-py dill multiprocess xxhash datasets==5.2.0)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${plat[@]}" -d .whl "${pkgs[@]}"
du -sh .whl
