"""Steering sweep on LoRA components and SAE features (rule `steering_sweep`).

The paper's limitations section reports that steering needed > 50x normal
activation magnitudes before anything changed, and then mostly produced
backtracking ("Wait"). This module measures that: a target is one component
(its scalar shifted by alpha x its typical |activation|), one SAE feature
(its decoder direction, at alpha x its typical activation, added to all
scalars) or a component's lora_A direction in the residual stream
(`lorascope.steering.residual`). Alphas may be negative. Per alpha it
records backtracking-word rate and accuracy of greedy generations on a
benchmark (graded as evaluation grades: a truncated completion without an
answer is wrong), and the KL to the unsteered LoRA on training sequences.

Positions (`steering.positions`): `all` shifts every position, the prompt
included (the public SAE steering script); `generated` only positions whose
input token was generated (the public lora_A script): during generation the
prompt's forward is left alone and every later step is shifted; on the KL's
training sequences, the assistant turn (tokens with a loss label). Edits go
through `lorascope.ablation.scalar_control.ScalarControl`; targets come from
`lorascope.steering.targets`.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import torch

from lorascope.ablation.generation import (
    backtrack_stats,
    completion_stats,
    graded_generations,
)
from lorascope.ablation.kl import PrefixRunner
from lorascope.ablation.scalar_control import ScalarControl
from lorascope.steering.apply import POSITIONS, applied, steered
from lorascope.steering.residual import ResidualShift
from lorascope.steering.targets import Target

__all__ = [
    "POSITIONS",
    "alpha_metrics",
    "applied",
    "backtrack_stats",
    "collect_scalars",
    "steered",
    "steering_kl",
    "sweep",
]


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


@torch.no_grad()
def steering_kl(
    runner: PrefixRunner,
    sequences: list[tuple[torch.Tensor, torch.Tensor]],
    targets: list[Target],
    alphas: list[float],
    layer_C: np.ndarray,
    logit_chunk: int = 512,
    *,
    shifts: dict[int, ResidualShift] | None = None,
    masks: list[torch.Tensor] | None = None,
    average: str = "tokens",
) -> np.ndarray:
    """Mean KL(unsteered || steered), [targets, alphas].

    `shifts[g]`: the residual hook of target g (kind residual). `masks`: per
    sequence, the positions shifted (bool [T]; None = all). `average`:
    `tokens` pools every counted token, `sequences` averages per-sequence means.
    """
    if average not in ("tokens", "sequences"):
        raise ValueError(f"ablation.average: unknown average {average!r}")
    device = next(runner.model.parameters()).device
    shifts = shifts or {}
    kl_GA = np.zeros((len(targets), len(alphas)))
    total = 0
    for s, (ids_T, scope_T) in enumerate(sequences):
        scope_T = scope_T.to(device)
        runner.reference(ids_T[None].to(device))
        runner.ref_logp(logit_chunk)
        weight = int(scope_T.sum()) if average == "tokens" else 1
        mask_T = None if masks is None else masks[s].to(device)
        for g, target in enumerate(targets):
            # Nothing before the first shifted layer changes.
            if target.residual is not None:
                start = target.residual.layer
                shifts[g].scale_V = torch.tensor(alphas, dtype=torch.float32)
                shifts[g].mask_T = mask_T
            else:
                start = int(layer_C[target.delta_C != 0].min())
            add_AC = torch.tensor(np.outer(alphas, target.delta_C), dtype=torch.float32)
            runner.control.add_mask_T = mask_T
            try:
                kl_A = runner.mean_kl(
                    start, scope_T, add_VC=add_AC.to(device), logit_chunk=logit_chunk
                )
            finally:
                runner.control.add_mask_T = None
                if g in shifts:
                    shifts[g].scale_V = shifts[g].mask_T = None
            kl_GA[g] += kl_A.cpu().numpy() * weight
        total += weight
    return kl_GA / max(total, 1)


def alpha_metrics(
    model,
    tokenizer,
    control: ScalarControl,
    bench_rows: list[dict],
    add_C: np.ndarray,
    alphas: list[float],
    *,
    words: list[str],
    max_new_tokens: int,
    batch_size: int,
    system: str | None = None,
    positions: str = "all",
    shift: ResidualShift | None = None,
    fallback: bool = True,
) -> list[dict[str, float]]:
    """Per alpha, greedy generations with alpha x `add_C` added to the
    scalars (and alpha x the residual `shift`): accuracy, backtracking.
    Every alpha's prompts go through the same generate calls (`batch_size`
    rows each, whatever their alpha), each row with its own shift. Grading
    passes `truncated` (and eval.grade_without_answer_marker as
    `fallback`)."""
    n = len(bench_rows)
    alpha_R = np.repeat(np.asarray(alphas, dtype=np.float64), n)
    with applied(model, control, add_C, alpha_R, positions, shift) as on_batch:
        correct, comps = graded_generations(
            model, tokenizer, bench_rows * len(alphas),
            max_new_tokens=max_new_tokens, batch_size=batch_size, system=system,
            fallback=fallback, on_batch=on_batch,
        )  # fmt: skip
    out = []
    for a in range(len(alphas)):
        ok, rows = correct[a * n : (a + 1) * n], comps[a * n : (a + 1) * n]
        out.append(
            {
                "accuracy": float(np.mean(ok)),
                "n_samples": len(rows),
                **completion_stats(rows, words),
                # Per problem, in bench order: paired intervals of a steered
                # minus the unsteered run (steering.models.transfer_summary).
                "sample_correct": [bool(c) for c in ok],
                "sample_backtracks": [
                    backtrack_stats([c.text], [c.n_generated_tokens], words)[
                        "backtrack_count"
                    ]
                    for c in rows
                ],
                "sample_tokens": [c.n_generated_tokens for c in rows],
            }
        )
    return out


def generation_metrics(
    model, tokenizer, control: ScalarControl, bench_rows: list[dict],
    add_C: np.ndarray, *, alpha: float = 1.0, **gen,
) -> dict[str, float]:  # fmt: skip
    """`alpha_metrics` of one alpha."""
    (metrics,) = alpha_metrics(
        model, tokenizer, control, bench_rows, add_C, [alpha], **gen
    )
    return metrics


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
    positions: str = "all",
    masks: list[torch.Tensor] | None = None,
    average: str = "tokens",
    fallback: bool = True,
) -> pl.DataFrame:
    """steering/sweep.parquet: one row per target x alpha.

    `masks`: per KL sequence, its generated (assistant) positions; needed when
    `positions` is `generated`.
    """
    if positions == "generated" and masks is None:
        raise ValueError("steering.positions generated needs the sequences' masks")
    shifts = {
        g: ResidualShift(model, t.residual)
        for g, t in enumerate(targets)
        if t.residual is not None
    }
    try:
        kl_GA = steering_kl(
            PrefixRunner(model, control), sequences, targets, alphas, layer_C,
            logit_chunk, shifts=shifts,
            masks=masks if positions == "generated" else None, average=average,
        )  # fmt: skip
        gen = dict(
            words=words, max_new_tokens=max_new_tokens, batch_size=batch_size,
            system=system, positions=positions, fallback=fallback,
        )  # fmt: skip
        # alpha = 0 adds nothing, so one unsteered generation serves every target.
        unsteered = None
        if 0 in alphas:
            zero_C = np.zeros(control.n_components)
            unsteered = generation_metrics(
                model, tokenizer, control, bench_rows, zero_C, **gen
            )
        rows = []
        for g, target in enumerate(targets):
            size = (
                np.linalg.norm(target.residual.vec_D)
                if target.residual is not None
                else np.linalg.norm(target.delta_C)
            )
            steered = [a for a in alphas if a != 0]
            by_alpha = {}
            if steered:
                log.info("steering %s at alphas %s", target.label, steered)
                by_alpha = dict(
                    zip(steered, alpha_metrics(
                        model, tokenizer, control, bench_rows, target.delta_C,
                        steered, shift=shifts.get(g), **gen,
                    ), strict=True)
                )  # fmt: skip
            for a, alpha in enumerate(alphas):
                metrics = by_alpha.get(alpha, unsteered)
                rows.append(
                    {
                        "kind": target.kind,
                        "id": target.id,
                        "label": target.label,
                        "selection": target.selection,
                        "alpha": float(alpha),
                        "positions": positions,
                        "shift_norm": float(abs(alpha) * size),
                        "kl_to_unsteered": float(kl_GA[g, a]),
                        **metrics,
                    }
                )
    finally:
        for shift in shifts.values():
            shift.remove()
    return pl.DataFrame(rows)
