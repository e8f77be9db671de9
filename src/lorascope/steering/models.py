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


def transfer_summary(sweep: pl.DataFrame, metric: str) -> pl.DataFrame:
    """Per target and model: `metric` at the strongest alpha of each sign
    minus its unsteered (alpha 0) value, one column per model, so a
    direction that moves the full fine-tune and not the base stands out."""
    zero = sweep.filter(pl.col("alpha") == 0).select(
        "model", pl.col(metric).alias("m0")
    )
    zero = zero.unique("model")
    rows = sweep.filter(pl.col("alpha") != 0).join(zero, on="model", how="left")
    rows = rows.with_columns(
        sign=pl.when(pl.col("alpha") > 0).then(pl.lit("+")).otherwise(pl.lit("-")),
        delta=pl.col(metric) - pl.col("m0"),
        strength=pl.col("alpha").abs(),
    )
    strongest = rows.sort("strength").group_by("kind", "id", "label", "sign",
                                               "model").last()  # fmt: skip
    return strongest.pivot(
        on="model", index=["kind", "id", "label", "sign", "alpha"], values="delta"
    ).sort("kind", "id", "sign")
