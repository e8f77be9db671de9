#!/usr/bin/env bash
# The micro DAG end to end on a lent CUDA GPU (training, HF evaluation,
# extraction, SAE, KL ablation, steering, figures), with timings per rule.
# Prepared here, run through the device tool in one call:
#   run(command="bash bench/gpu/run_micro_dag.sh", carry=[".whl"], timeout_s=540)
# Wheels the GPU image lacks (Python 3.12 there) go in .whl/ first, on this
# machine: bash bench/gpu/fetch_wheels.sh. They came to 80 MB on 2026-11-28
# (polars' runtime alone is 54 MB), over the device tool's 64 MiB per call:
# carry them in two calls to the same warm machine (each call installs what
# .whl/ holds into /tmp/site, which stays while the machine is held), the
# second one running this script. Results land in $OUT (device tool).
# Not yet run on a GPU: no device was lent to the session that wrote it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, trl, sae_lens, snakemake; print(torch.__version__, transformers.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
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
