"""Benchmark: a steering target's alphas in shared generate calls vs one
generate call per alpha (rule steering_sweep's generations).

On a finished run's rank-1 LoRA (the embedded run: `make run`, or any run
dir with `toy/base_model`, `train/rank1/adapter` and the first benchmark),
times `lorascope.steering.sweep.alpha_metrics` for one component target
over the sweep's nonzero alphas: one alpha at a time (the baseline), then
every alpha's rows through shared calls of each `--batch-sizes` rows.
Repeats interleave the modes; prints each mode's best CPU seconds, its
ratio to the baseline, and whether every mode gave the baseline's
per-problem results (correct, tokens, backtracking words).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_steering.py [--run results/toy]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import polars as pl
import torch

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.core.models import load_causal_lm, load_lora_model, load_tokenizer
from lorascope.steering.sweep import alpha_metrics
from lorascope.steering.targets import component_direction

ALPHAS = [1.0, 3.0, 10.0, 30.0, 100.0]  # the sweep's nonzero defaults
PER_PROBLEM = ("sample_correct", "sample_tokens", "sample_backtracks")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("results/toy"))
    ap.add_argument("--benchmark", default="toy_add2")
    ap.add_argument("--limit", type=int, default=32, help="problems (steering.limit)")
    ap.add_argument("--component", type=int, default=2, help="the target's index")
    ap.add_argument("--typical", type=float, default=0.245,
                    help="its shift at alpha 1 (L0.v's, embedded run)")  # fmt: skip
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 160])
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    torch.set_num_threads(1)
    base = str(args.run / "toy" / "base_model")
    model = load_causal_lm(base, dtype="float32", attn_implementation="sdpa",
                           device="cpu", revision=None)  # fmt: skip
    model = load_lora_model(model, str(args.run / "train" / "rank1" / "adapter"))
    model.eval()
    tok = load_tokenizer(base, None)
    bench = pl.read_parquet(args.run / "data" / "bench" / f"{args.benchmark}.parquet")
    rows = bench.head(args.limit).to_dicts()
    control = ScalarControl(lora_layers(model))
    delta_C = component_direction(control.n_components, args.component, args.typical)
    gen = dict(words=["Wait"], max_new_tokens=args.max_new_tokens)

    def one_per_alpha():
        return [
            m
            for a in ALPHAS
            for m in alpha_metrics(
                model, tok, control, rows, delta_C, [a], batch_size=64, **gen
            )  # fmt: skip
        ]

    modes = {"one alpha per call (64)": one_per_alpha}
    for size in args.batch_sizes:
        modes[f"alphas share calls ({size})"] = lambda size=size: alpha_metrics(
            model, tok, control, rows, delta_C, ALPHAS, batch_size=size, **gen
        )
    best = dict.fromkeys(modes, float("inf"))
    results = {}
    for _ in range(args.repeats):
        for name, run in modes.items():
            start = time.process_time()
            out = run()
            results[name] = [tuple(str(m[k]) for k in PER_PROBLEM) for m in out]
            best[name] = min(best[name], time.process_time() - start)
    baseline = next(iter(modes))
    print(f"{len(rows)} problems x {len(ALPHAS)} alphas, best of {args.repeats}")
    for name in modes:
        same = results[name] == results[baseline]
        print(f"{name:28s} {best[name]:7.2f} s CPU  "
              f"{best[name] / best[baseline]:.2f}x  same results: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
