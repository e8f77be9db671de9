"""Benchmark: attribution patching for every unit against exact removal of
every unit (rule `feature_attribution`, issue 28: target ratio <= 0.05).

On the same random Qwen2 + rank-1 LoRA, random JumpReLU SAE and sequences
(`bench_ablation.build`: `toy` = the embedded model's size, 4 layers;
`larger` = 12 layers), times

- attribution: `lorascope.attribution.gradients.attribute`, every component
  and every SAE latent, three targets (backtrack / answer / loss stand-ins
  on random tokens);
- exact: what the workflow runs to remove every unit one at a time, its
  KL ablation of every component (`lorascope.ablation.kl.ablation_kl`, the
  component rows of `kl_ablation`) plus `feature_ablation_kl` of every SAE
  latent (rule `feature_ablation`), prefix reuse and batching on;

and prints the CPU-time ratio (process time, best of `--repeats`). Then the
estimates against exact removal of the targets themselves
(`lorascope.attribution.exact.exact_effects`): Spearman rho per kind and
target, the validation table's numbers on a real architecture.

    OMP_NUM_THREADS=1 PYTHONPATH=src:bench .venv/bin/python bench/bench_attribution.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_ablation import build
from bench_feature_ablation import random_sae

from lorascope.ablation.kl import ablation_kl, build_ablations
from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.attribution.exact import exact_effects
from lorascope.attribution.gradients import attribute
from lorascope.attribution.tables import exact_frame, validation_table
from lorascope.attribution.targets import TargetSequence
from lorascope.causal.feature_kl import SaeMap, feature_ablation_kl
from lorascope.core.components import lora_modules, table_from_modules

TARGETS = ["backtrack", "answer", "loss"]


def target_sequences(seqs, backtrack_ids=(0, 1, 2)) -> list[TargetSequence]:
    """Stand-ins: 'backtrack' where the next token is one of a few ids,
    'answer' the last 16 positions, 'loss' every position."""
    out = []
    for ids_T, _ in seqs:
        n = len(ids_T)
        nxt = ids_T[1:]
        back = torch.nonzero(torch.isin(nxt, torch.tensor(backtrack_ids))).flatten()
        out.append(
            TargetSequence(
                ids_T,
                {
                    "backtrack": back,
                    "answer": torch.arange(n - 17, n - 1),
                    "loss": torch.arange(n - 1),
                },
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=["toy", "larger", "all"], default="all")
    parser.add_argument("--expansion", type=int, default=8, help="d_sae / components")
    parser.add_argument("--density", type=float, default=0.02)
    parser.add_argument("--variants-per-forward", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for shape in ["toy", "larger"] if args.shape == "all" else [args.shape]:
        model, seqs = build(shape)
        table = table_from_modules([m for m, _ in lora_modules(model)])
        d_sae = args.expansion * table.height
        sae_map = SaeMap(random_sae(table.height, d_sae, args.density))
        tseqs = target_sequences(seqs)
        comps = [a for a in build_ablations(table) if a.kind == "component"]
        remove_GF = np.eye(d_sae, dtype=bool)
        t_att = t_exact = float("inf")
        with ScalarControl(lora_layers(model)) as control:
            for _ in range(args.repeats):
                t0 = time.process_time()
                att = attribute(model, control, sae_map, tseqs, TARGETS)
                t_att = min(t_att, time.process_time() - t0)
                t0 = time.process_time()
                ablation_kl(model, control, comps, seqs,
                            variants_per_forward=args.variants_per_forward)  # fmt: skip
                kl = feature_ablation_kl(
                    model, control, sae_map, table, remove_GF, seqs,
                    variants_per_forward=args.variants_per_forward,
                )  # fmt: skip
                t_exact = min(t_exact, time.process_time() - t0)
            exact = exact_effects(
                model, control, sae_map, table, tseqs, TARGETS, np.arange(d_sae),
                variants_per_forward=args.variants_per_forward,
            )  # fmt: skip
        fired = (kl.kl_floor_GS > 0).mean()
        print(
            f"{shape} ({model.config.num_hidden_layers} layers, cpu float32): "
            f"{table.height} components + {d_sae} latents ({fired:.0%} of (latent, "
            f"sequence) pairs fire) x {len(seqs)} sequences of {len(seqs[0][0])} "
            f"tokens; best of {args.repeats}: attribution {t_att:.2f}s "
            f"({len(TARGETS)} targets), exact removal {t_exact:.2f}s, "
            f"ratio {t_att / t_exact:.4f}"
        )
        pairs = exact_frame(att, exact, np.arange(d_sae))
        val = validation_table(pairs, n_boot=200, seed=0, trust_rho=0.7)
        for row in val.iter_rows(named=True):
            print(
                f"  {row['kind']:4} {row['target']:9} rho {row['rho']:.3f} "
                f"[{row['rho_lo']:.3f}, {row['rho_hi']:.3f}] over {row['n_units']} "
                f"units, sign agreement {row['sign_agreement']:.2f}, median rel. "
                f"error {row['rel_error_median']:.2f}"
            )


if __name__ == "__main__":
    main()
