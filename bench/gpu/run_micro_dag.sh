#!/usr/bin/env bash
# The micro DAG end to end on a lent CUDA GPU (training, HF evaluation,
# extraction, SAE, KL ablation, steering, figures), with timings per rule.
# Prepared here, run through the device tool in one call:
#   bash bench/gpu/fetch_wheels.sh     # here first: .whl/site.tar.xz
#   run(command="bash bench/gpu/run_micro_dag.sh", carry=[".whl"], timeout_s=540)
# .whl/site.tar.xz holds what the GPU image lacks (bench/gpu/wheels.lock,
# derived from pyproject.toml and the image's package list by
# bench/gpu/wheels.py; 50 MiB, under the 64 a call carries with the repo).
# tests/workflow/test_gpu_bundle.py checks on the CPU that it imports and
# dry-runs this DAG. Results land in $OUT (device tool).
# Not yet run on a GPU: no device was lent to the sessions that wrote it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
if [ -f .whl/site.tar.xz ]; then
  rm -rf /tmp/site && mkdir -p /tmp/site
  python3 -c "import tarfile; tarfile.open('.whl/site.tar.xz').extractall('/tmp/site', filter='data')" || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, trl, sae_lens, snakemake; print(torch.__version__, torch.version.cuda, transformers.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
# The image's versions (bench/gpu/image_packages.txt records what was known)
# and whether the carried packages' requirements hold against them.
python3 -m pip list --format=freeze > "$OUT/pip_list.txt" 2>&1
python3 -m pip check >> "$OUT/gpu.txt" 2>&1 || echo "pip check: see above" | tee -a "$OUT/gpu.txt"
start=$(date +%s)
python3 -m snakemake all --cores 8 --workflow-profile none \
  --configfile config/config.yaml tests/configs/micro.yaml bench/gpu/micro_cuda.yaml \
  > "$OUT/snakemake.log" 2>&1
rc=$?
echo "rc $rc, $(( $(date +%s) - start )) s" | tee "$OUT/summary.txt"
# Per-rule wall times from the job logs' timestamps, and any failure's log tail.
grep -h -E "^(rule |\[.*\]$|Finished job)" "$OUT/snakemake.log" | tail -200 > "$OUT/timeline.txt"
if [ $rc -ne 0 ]; then
  for log in $(grep -l -i -E "error|traceback" logs/micro-cuda/*/*.log 2>/dev/null); do
    echo "== $log"; tail -30 "$log"
  done | tee "$OUT/failures.txt"
fi
tar czf "$OUT/tables.tgz" results/micro-cuda/tables results/micro-cuda/ablation results/micro-cuda/sae/metrics.json 2>/dev/null
exit $rc
