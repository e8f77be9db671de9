"""The steering sweep's `model` axis (rule `steering_sweep`, `steering.models`).

A target pushes LoRA scalars (a component's, or an SAE feature's decoder
row over all of them) and / or the residual stream. In the rank-1 model
(`rank1`, the paper's setting) the pushed scalars add to what the adapter
computes. The same push can be given to a model without the adapter's own
contribution: every `lora_A` weight is zeroed (`adapter_silenced`), so each
adapted module computes its base output plus `lora_B · shift · scaling`,
exactly the direction and strength the rank-1 model gets on top of the base
(`base`) or of the full fine-tune (`full`: the same adapter attached to the
full fine-tune's weights, silenced the same way). A direction that changes
backtracking in the full fine-tune but not in the base was repurposed by
fine-tuning; one that works in both was already there.

The rank-1 rows are computed exactly as without the axis (same model, same
code, first), so adding models never changes them (tests/unit/test_steering_models.py).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator

import numpy as np
import polars as pl
import torch
from torch import nn

from lorascope.ablation.scalar_control import ScalarControl, lora_layers

__all__ = ["MODELS", "adapter_silenced", "sweep_models", "transfer_summary"]

# In the order the sweep runs them: rank1 and base share the loaded base +
# adapter; full replaces it (never two large models on one card).
MODELS = ("rank1", "base", "full")


@contextlib.contextmanager
def adapter_silenced(lora_layers: list[nn.Module]) -> Iterator[None]:
    """Every LoRA layer's `lora_A` weights zeroed for the duration: the
    scalars are 0 (the model computes its base weights' output) and a shift
    added to them still writes through `lora_B` and the scaling."""
    saved = []
    with torch.no_grad():
        for layer in lora_layers:
            for lora_a in layer.lora_A.values():
                saved.append((lora_a, lora_a.weight.detach().clone()))
                lora_a.weight.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            for lora_a, weight in saved:
                lora_a.weight.copy_(weight)


def sweep_models(
    models: list[str],
    held: list[nn.Module],
    load_full: Callable[[], nn.Module],
    run_sweep: Callable[[nn.Module, ScalarControl], pl.DataFrame],
    log=None,
) -> pl.DataFrame:
    """One sweep per model named in `models`, in MODELS order, as one frame
    with a `model` column. `held`: a list holding the only reference to the
    loaded base + adapter (emptied here, so the model can leave the card
    before `load_full()` brings the full fine-tune + adapter). `run_sweep(model,
    control)` is the sweep (lorascope.steering.sweep.sweep) of one model."""
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"steering.models: unknown {unknown} (choose from {MODELS})")
    model = held.pop()
    frames = []
    for name in [m for m in MODELS if m in models]:
        if name == "full":
            del model  # the base + adapter leaves the card first
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            model = load_full()
        if log:
            log.info("steering in model %s", name)
        silence = contextlib.nullcontext()
        if name != "rank1":
            silence = adapter_silenced(lora_layers(model))
        with ScalarControl(lora_layers(model)) as control, silence:
            frame = run_sweep(model, control)
        frames.append(frame.with_columns(model=pl.lit(name)))
    return pl.concat(frames)


def _rate(backtracks_P, tokens_P, idx_BP) -> np.ndarray:
    """Backtracking words per 1k generated tokens of each resample [B]."""
    tokens_B = np.maximum(tokens_P[idx_BP].sum(1), 1)
    return 1000 * backtracks_P[idx_BP].sum(1) / tokens_B


def _moved(lo: float, hi: float) -> bool:
    return lo > 0 or hi < 0


def _verdict(moved: dict[str, bool]) -> str | None:
    """What a push does in the base vs the full fine-tune (backtracking)."""
    if "base" not in moved or "full" not in moved:
        return None
    return {
        (False, True): "repurposed by fine-tuning",
        (True, True): "already in the base",
        (True, False): "base only",
        (False, False): "no effect",
    }[(moved["base"], moved["full"])]


def transfer_summary(
    sweep: pl.DataFrame, samples: int = 1000, seed: int = 0
) -> pl.DataFrame:
    """Per target, sign of alpha (its strongest push) and model: the change
    of backtracking per 1k generated tokens and of accuracy against the same
    model unsteered, with 95% paired bootstrap intervals over the problems
    (columns `sample_*` of the sweep); and per target and sign a `transfer`
    verdict from the backtracking intervals of base and full: moved in the
    full fine-tune only = repurposed by fine-tuning, in both = already in the
    base (null unless both models were swept)."""
    rng = np.random.default_rng(seed)
    rows = []
    for (model,), grp in sweep.group_by("model", maintain_order=True):
        zero = grp.filter(pl.col("alpha") == 0)
        if zero.is_empty():
            raise ValueError(f"steering.alphas: no unsteered run (alpha 0) for {model}")
        z = zero.row(0, named=True)
        pushed = grp.filter(pl.col("alpha") != 0).with_columns(
            sign=pl.when(pl.col("alpha") > 0).then(pl.lit("+")).otherwise(pl.lit("-"))
        )
        strongest = pushed.sort(pl.col("alpha").abs()).group_by(
            "kind", "id", "label", "sign", maintain_order=True
        ).last()  # fmt: skip
        for r in strongest.iter_rows(named=True):
            b1, n1 = np.array(r["sample_backtracks"]), np.array(r["sample_tokens"])
            b0, n0 = np.array(z["sample_backtracks"]), np.array(z["sample_tokens"])
            c1, c0 = np.array(r["sample_correct"]), np.array(z["sample_correct"])
            idx_BP = rng.integers(0, len(b1), (samples, len(b1)))
            idx_BP = np.vstack([np.arange(len(b1)), idx_BP])  # row 0: the sample
            bt = _rate(b1, n1, idx_BP) - _rate(b0, n0, idx_BP)
            acc = c1[idx_BP].mean(1) - c0[idx_BP].mean(1)
            bt_lo, bt_hi = np.percentile(bt[1:], [2.5, 97.5])
            acc_lo, acc_hi = np.percentile(acc[1:], [2.5, 97.5])
            rows.append(
                {"kind": r["kind"], "id": r["id"], "label": r["label"],
                 "sign": r["sign"], "alpha": r["alpha"], "model": model,
                 "backtrack_delta": bt[0], "backtrack_lo": bt_lo,
                 "backtrack_hi": bt_hi, "accuracy_delta": acc[0],
                 "accuracy_lo": acc_lo, "accuracy_hi": acc_hi,
                 "n_samples": len(b1)}
            )  # fmt: skip
    df = pl.DataFrame(rows)
    verdicts = {}
    for r in rows:
        key = (r["kind"], r["id"], r["sign"])
        moved = _moved(r["backtrack_lo"], r["backtrack_hi"])
        verdicts.setdefault(key, {})[r["model"]] = moved
    return df.with_columns(
        transfer=pl.Series([_verdict(verdicts[(r["kind"], r["id"], r["sign"])])
                            for r in rows], dtype=pl.Utf8)
    )  # fmt: skip
