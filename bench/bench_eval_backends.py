"""Benchmark: the embedded toy evaluation's generation, vLLM-CPU vs HF.

Runs every generation job of the toy eval exactly as rule eval_generate does
(`python -m lorascope.evaluation`, a fresh process per job: imports, model
loading and engine start-up included), one job at a time, first with
backend hf (one job per variant, in this interpreter) and then with backend
vllm (two engines: base + the three LoRA variants in one call, and the full
fine-tune; in eval.vllm.python). Prints each job's wall time, the totals,
the ratio vllm / hf, and how many completions the two backends share.

It needs a run's trained models and benchmark files; build them with

    .venv/bin/snakemake --profile profiles/local results/toy/train/full/model \\
        results/toy/adapters/rank1-attn-ablated \\
        results/toy/adapters/rank1-mlp-ablated \\
        results/toy/data/bench/toy_add{2,3,4}.parquet

(or `make run`), then

    .venv/bin/python bench/bench_eval_backends.py [--run results/toy]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

from lorascope.core.config import validate

REPO = Path(__file__).resolve().parents[1]
LORAS = ["rank1", "rank1-attn-ablated", "rank1-mlp-ablated"]
VARIANTS = ["base", *LORAS, "full"]
ENGINES = {
    "hf": {v: [v] for v in VARIANTS},
    "vllm": {"base-and-loras": ["base", *LORAS], "full": ["full"]},
}


def variant_model(run: Path, variant: str) -> list:
    base = str(run / "toy" / "base_model")
    if variant == "full":
        return [str(run / "train" / "full" / "model"), None]
    if variant == "base":
        return [base, None]
    adapter = "train/rank1/adapter" if variant == "rank1" else f"adapters/{variant}"
    return [base, str(run / adapter)]


def run_job(python, spec, bench, out) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p
    )
    cmd = [python, "-m", "lorascope.evaluation", "--spec", json.dumps(spec)]
    cmd += ["--bench", *map(str, bench), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"job failed: {' '.join(cmd[:3])}\n{proc.stderr[-4000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="results/toy", help="a run with trained models")
    ap.add_argument("--config", default="config/config.yaml")
    args = ap.parse_args()

    config = validate(yaml.safe_load((REPO / args.config).read_text()))
    ev, run = config["eval"], Path(args.run).resolve()
    bench = [run / "data" / "bench" / f"{b}.parquet" for b in ev["benchmarks"]]
    missing = [p for p in [*bench, run / "train/full/model"] if not p.exists()]
    if missing:
        sys.exit(f"missing {missing[0]}: build the run's models first (see --help)")
    vllm_python = REPO / ev["vllm"]["python"] if ev["vllm"]["python"] else None
    if vllm_python is None or not vllm_python.exists():
        sys.exit(f"no vLLM interpreter at {vllm_python}: run `make vllm-env`")
    pythons = {"hf": sys.executable, "vllm": str(vllm_python)}
    keys = ("max_new_tokens", "batch_size", "context_length", "think_prefill", "vllm")
    out_dir = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    totals = {}
    for backend, engines in ENGINES.items():
        totals[backend] = 0.0
        for engine, variants in engines.items():
            spec = {
                "models": {v: variant_model(run, v) for v in variants},
                "base": str(run / "toy" / "base_model"),
                "eval": {"backend": backend} | {k: ev[k] for k in keys},
                "model": config["model"],
                "system_prompt": config["data"]["system_prompt"],
                "device": "cpu",
                "seed": config["seed"],
            }
            out = out_dir / backend / engine
            seconds = run_job(pythons[backend], spec, bench, out)
            totals[backend] += seconds
            print(f"{backend:4s} job {engine:15s} {seconds:7.1f} s", flush=True)
    same = total = 0
    for engine, variants in ENGINES["vllm"].items():
        for v, b in ((v, b) for v in variants for b in bench):
            a = pl.read_parquet(out_dir / "vllm" / engine / v / b.name)
            h = pl.read_parquet(out_dir / "hf" / v / v / b.name)
            same += int((a["completion"] == h["completion"]).sum())
            total += a.height
    n = sum(pl.read_parquet(b).height for b in bench)
    print(
        f"toy eval: {len(VARIANTS)} variants x {n} problems, "
        f"max_new_tokens={ev['max_new_tokens']}, cpus={os.cpu_count()}"
    )
    print(f"hf   total: {totals['hf']:7.1f} s")
    print(f"vllm total: {totals['vllm']:7.1f} s")
    print(f"identical completions: {same}/{total}")
    print(f"time ratio vllm / hf: {totals['vllm'] / totals['hf']:.2f}")
    shutil.rmtree(out_dir)


if __name__ == "__main__":
    main()
