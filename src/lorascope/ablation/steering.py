"""Steering sweep on LoRA components and SAE features (rule `steering_sweep`).

The paper's limitations section reports that steering needed > 50x normal
activation magnitudes before anything changed, and then mostly produced
backtracking ("Wait"). This module measures that: a target is one component
(its scalar shifted by alpha x its typical |activation|) or one SAE feature
(its decoder direction, at alpha x its typical activation, added to all
scalars). Per alpha it records backtracking-word rate and accuracy of greedy
generations on a benchmark, and the KL to the unsteered LoRA on training
sequences. Edits go through `lorascope.ablation.scalar_control.ScalarControl`;
targets come from `lorascope.ablation.steering_targets`.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import polars as pl
import torch

from lorascope.ablation.kl import PrefixRunner
from lorascope.ablation.scalar_control import ScalarControl
from lorascope.ablation.steering_targets import Target
from lorascope.core.decoding import build_prompts, generate_hf
from lorascope.core.grading import grade

__all__ = ["backtrack_stats", "collect_scalars", "steered", "steering_kl", "sweep"]

log = logging.getLogger(__name__)


@torch.no_grad()
def collect_scalars(
    runner: PrefixRunner, sequences: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Unsteered LoRA scalars of the scoped tokens of `sequences`, [N, C]."""
    device = next(runner.model.parameters()).device
    rows = [
        runner.reference(ids_T[None].to(device))[scope_T.to(device)]
        for ids_T, scope_T in sequences
    ]
    return torch.cat(rows).float().cpu()


def backtrack_stats(
    texts: list[str], n_tokens: list[int], words: list[str]
) -> dict[str, float]:
    """Backtracking words per 1000 generated tokens, and share of samples with any."""
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b")
    counts = [len(pattern.findall(t)) for t in texts]
    return {
        "backtrack_count": int(sum(counts)),
        "backtrack_per_1k_tokens": 1000.0 * sum(counts) / max(sum(n_tokens), 1),
        "backtrack_frac_samples": float(np.mean([c > 0 for c in counts])),
    }


class steered:
    """Context: every forward adds alpha x delta_C to the scalars (generation)."""

    def __init__(self, control: ScalarControl, delta_C: np.ndarray, alpha: float):
        self.control = control
        self.add_1C = torch.as_tensor(alpha * delta_C, dtype=torch.float32)[None]

    def __enter__(self) -> steered:
        self.control.clear()
        self.control.add_VC = self.add_1C
        return self

    def __exit__(self, *exc) -> None:
        self.control.clear()


@torch.no_grad()
def steering_kl(
    runner: PrefixRunner,
    sequences: list[tuple[torch.Tensor, torch.Tensor]],
    targets: list[Target],
    alphas: list[float],
    layer_C: np.ndarray,
    logit_chunk: int = 512,
) -> np.ndarray:
    """Token-weighted mean KL(unsteered || steered), [targets, alphas]."""
    device = next(runner.model.parameters()).device
    kl_GA = np.zeros((len(targets), len(alphas)))
    n_tokens = 0
    for ids_T, scope_T in sequences:
        scope_T = scope_T.to(device)
        runner.reference(ids_T[None].to(device))
        runner.ref_logp(logit_chunk)
        n = int(scope_T.sum())
        for g, target in enumerate(targets):
            # Nothing before the first shifted component's layer changes.
            start = int(layer_C[target.delta_C != 0].min())
            add_AC = torch.tensor(np.outer(alphas, target.delta_C), dtype=torch.float32)
            kl_A = runner.mean_kl(
                start, scope_T, add_VC=add_AC.to(device), logit_chunk=logit_chunk
            )
            kl_GA[g] += kl_A.cpu().numpy() * n
        n_tokens += n
    return kl_GA / max(n_tokens, 1)


def generation_metrics(
    model,
    tokenizer,
    control: ScalarControl,
    bench_rows: list[dict],
    add_C: np.ndarray,
    *,
    words: list[str],
    max_new_tokens: int,
    batch_size: int,
    system: str | None = None,
) -> dict[str, float]:
    """Greedy generations with `add_C` added to the scalars: accuracy, backtracking."""
    prompts = build_prompts(tokenizer, [r["problem"] for r in bench_rows], system)
    with steered(control, add_C, 1.0):
        comps = generate_hf(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            names=[f"problem {r.get('id', i)!r}" for i, r in enumerate(bench_rows)],
            progress=False,
        )
    correct = [
        grade(row, c.text).correct for row, c in zip(bench_rows, comps, strict=True)
    ]
    texts, n_gen = [c.text for c in comps], [c.n_generated_tokens for c in comps]
    return {
        "accuracy": float(np.mean(correct)),
        "n_samples": len(comps),
        "mean_generated_tokens": float(np.mean(n_gen)),
        "truncated_frac": float(np.mean([c.truncated for c in comps])),
        **backtrack_stats(texts, n_gen, words),
    }


def sweep(
    model,
    tokenizer,
    control: ScalarControl,
    targets: list[Target],
    alphas: list[float],
    bench_rows: list[dict],
    sequences: list[tuple[torch.Tensor, torch.Tensor]],
    layer_C: np.ndarray,
    *,
    words: list[str],
    max_new_tokens: int,
    batch_size: int,
    logit_chunk: int = 512,
    system: str | None = None,
) -> pl.DataFrame:
    """steering/sweep.parquet: one row per target x alpha."""
    kl_GA = steering_kl(
        PrefixRunner(model, control), sequences, targets, alphas, layer_C, logit_chunk
    )
    gen = dict(
        words=words, max_new_tokens=max_new_tokens, batch_size=batch_size, system=system
    )
    # alpha = 0 adds nothing, so one unsteered generation serves every target.
    unsteered = None
    if 0 in alphas:
        zero_C = np.zeros(control.n_components)
        unsteered = generation_metrics(
            model, tokenizer, control, bench_rows, zero_C, **gen
        )
    rows = []
    for g, target in enumerate(targets):
        for a, alpha in enumerate(alphas):
            log.info("steering %s at alpha %s", target.label, alpha)
            metrics = (
                unsteered
                if alpha == 0
                else generation_metrics(
                    model, tokenizer, control, bench_rows, alpha * target.delta_C, **gen
                )
            )
            rows.append(
                {
                    "kind": target.kind,
                    "id": target.id,
                    "label": target.label,
                    "selection": target.selection,
                    "alpha": float(alpha),
                    "shift_norm": float(alpha * np.linalg.norm(target.delta_C)),
                    "kl_to_unsteered": float(kl_GA[g, a]),
                    **metrics,
                }
            )
    return pl.DataFrame(rows)
