"""Benchmark: the embedded toy evaluation's generation, vLLM-CPU vs HF.

Runs every generation job of the toy eval exactly as rule eval_generate does
(`python -m lorascope.evaluation`, a fresh process per job: imports, model
loading and engine start-up included), one job at a time, first with
backend hf (one job per variant, in this interpreter) and then with backend
vllm (two engines: base + the three LoRA variants in one call, and the full
fine-tune; in one job or two as eval.vllm.one_job resolves it, in
eval.vllm.python), with vLLM's enforce_eager as the config
resolves it (null: eager on CPU) and, with `--compiled`, once more compiled
(`--vllm-set KEY=VALUE`: once more with that eval.vllm key).
Prints each job's wall and CPU time (the job and every process it waited
for), the totals, the CPU ratio vllm / hf, and how many completions each
vLLM mode shares with HF.

It needs a run's trained models and benchmark files; build them with

    .venv/bin/snakemake --profile profiles/local results/toy/train/full/model \\
        results/toy/adapters/rank1-attn-ablated \\
        results/toy/adapters/rank1-mlp-ablated \\
        results/toy/data/bench/toy_add2.parquet \\
        results/toy/data/bench/toy_mix.parquet \\
        results/toy/data/bench/toy_add4.parquet

(or `make run`), then

    .venv/bin/python bench/bench_eval_backends.py [--run results/toy]
        [--limit N] [--compiled] [--vllm-set max_lora_rank=8]

`--limit N` keeps the first N problems of each benchmark (the whole embedded
evaluation takes several minutes of CPU per backend on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

from lorascope.core.config import validate
from lorascope.evaluation.engines import engine_groups

REPO = Path(__file__).resolve().parents[1]
LORAS = ["rank1", "rank1-attn-ablated", "rank1-mlp-ablated"]
VARIANTS = ["base", *LORAS, "full"]
# The eval keys a generation job reads (rule eval_generate's spec).
KEYS = ("max_new_tokens", "batch_size", "context_length", "think_prefill")
KEYS += ("budget_forcing", "vllm")


def variant_model(run: Path, variant: str) -> list:
    base = str(run / "toy" / "base_model")
    if variant == "full":
        return [str(run / "train" / "full" / "model"), None]
    if variant == "base":
        return [base, None]
    adapter = "train/rank1/adapter" if variant == "rank1" else f"adapters/{variant}"
    return [base, str(run / adapter)]


def children_cpu() -> float:
    """CPU seconds of every finished child process so far (and theirs)."""
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run_job(python, spec, bench, out) -> tuple[float, float]:
    """(wall, CPU) seconds of one generation job."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p
    )
    cmd = [python, "-m", "lorascope.evaluation", "--spec", json.dumps(spec)]
    cmd += ["--bench", *map(str, bench), "--out", str(out)]
    cpu, start = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if proc.returncode != 0:
        sys.exit(f"job failed: {' '.join(cmd[:3])}\n{proc.stderr[-4000:]}")
    return wall, cpu


def limited(bench: list[Path], limit: int | None, tmp: Path) -> list[Path]:
    """The benchmark files, cut to their first `limit` problems."""
    if limit is None:
        return bench
    (tmp / "bench").mkdir(parents=True)
    out = []
    for path in bench:
        out.append(tmp / "bench" / path.name)
        pl.read_parquet(path).head(limit).write_parquet(out[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="results/toy", help="a run with trained models")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--limit", type=int, help="first N problems per benchmark")
    ap.add_argument(
        "--compiled", action="store_true", help="also run vLLM compiled (not eager)"
    )
    ap.add_argument("--vllm-set", action="append", default=[], metavar="KEY=VALUE",
                    help="also run vLLM with eval.vllm.KEY = VALUE (YAML), "
                    "e.g. max_lora_rank=8")  # fmt: skip
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
    out_dir = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    bench = limited(bench, args.limit, out_dir)
    modes = {"hf": ("hf", sys.executable, {}), "vllm": ("vllm", str(vllm_python), {})}
    if args.compiled:
        modes["vllm compiled"] = ("vllm", str(vllm_python), {"enforce_eager": False})
    for setting in args.vllm_set:
        key, _, value = setting.partition("=")
        if key not in ev["vllm"]:
            sys.exit(f"--vllm-set {setting}: eval.vllm has no key {key!r}")
        modes[f"vllm {setting}"] = (
            "vllm",
            str(vllm_python),
            {key: yaml.safe_load(value)},
        )

    def jobs_of(backend: str) -> dict[str, list[str]]:
        """The generation jobs as rule eval_generate groups the variants."""
        groups = engine_groups(
            backend, ev["vllm"], config["device"], VARIANTS, LORAS[1:]
        )
        return groups[0]

    wall, cpu = {}, {}
    for mode, (backend, python, vllm_over) in modes.items():
        wall[mode] = cpu[mode] = 0.0
        for engine, variants in jobs_of(backend).items():
            eval_cfg = {"backend": backend} | {k: ev[k] for k in KEYS}
            eval_cfg["vllm"] = ev["vllm"] | vllm_over
            spec = {
                "models": {v: variant_model(run, v) for v in variants},
                "base": str(run / "toy" / "base_model"),
                "eval": eval_cfg,
                "model": config["model"],
                "data": {"system_prompt": config["data"]["system_prompt"]},
                "device": "cpu",
                "seed": config["seed"],
            }
            out = out_dir / mode / engine
            seconds, cpu_s = run_job(python, spec, bench, out)
            wall[mode] += seconds
            cpu[mode] += cpu_s
            print(
                f"{mode:13s} job {engine:18s} wall {seconds:6.1f} s cpu {cpu_s:6.1f} s",
                flush=True,
            )
    n = sum(pl.read_parquet(b).height for b in bench)
    print(
        f"toy eval: {len(VARIANTS)} variants x {n} problems "
        f"({', '.join(p.stem for p in bench)}), "
        f"max_new_tokens={ev['max_new_tokens']}, cpus={os.cpu_count()}"
    )
    for mode in modes:
        line = f"{mode:13s} total: wall {wall[mode]:7.1f} s  cpu {cpu[mode]:7.1f} s"
        if mode != "hf":
            same = total = 0
            for engine, variants in jobs_of("vllm").items():
                for v, b in ((v, b) for v in variants for b in bench):
                    a = pl.read_parquet(out_dir / mode / engine / v / b.name)
                    h = pl.read_parquet(out_dir / "hf" / v / v / b.name)
                    same += int((a["completion"] == h["completion"]).sum())
                    total += a.height
            line += (
                f"  cpu ratio {mode} / hf: {cpu[mode] / cpu['hf']:.2f}"
                f"  completions identical to hf: {same}/{total}"
            )
        if mode not in ("hf", "vllm"):
            line += f"  cpu / vllm's: {cpu[mode] / cpu['vllm']:.2f}"
        print(line)
    shutil.rmtree(out_dir)


if __name__ == "__main__":
    main()
