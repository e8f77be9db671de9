"""Residual-stream steering along a component's lora_A direction (rule
`steering_sweep`, `steering.residual: true`).

The paper's public code has a second steering script: it adds a LoRA
component's lora_A direction x a mean residual norm x a strength (10) to the
residual stream, at generated positions only (for up_proj and gate_proj
directions, on the attention output, i.e. the residual that feeds the MLP).
Here a component's direction is injected where its adapted matrix reads the
residual stream: the layer input for q/k/v (before `input_layernorm`), the
post-attention residual for gate/up (before `post_attention_layernorm`).
o_proj and down_proj read the attention heads / the MLP hidden units, not the
residual stream, so they have no such direction.

The shift is alpha x (mean L2 norm of that residual over the counted tokens
of the KL sequences) x the direction: the unit lora_A row
(`steering.residual_direction: unit`) or the raw row (`raw`, the public
code's; its length is the row's norm).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from lorascope.steering.targets import Target

log = logging.getLogger(__name__)

__all__ = [
    "RESIDUAL_MODULES",
    "ResidualShift",
    "ResidualSpec",
    "lora_a_direction",
    "mean_residual_norm",
    "residual_targets",
]

# Modules whose adapted matrix reads the residual stream, and where from.
RESIDUAL_MODULES = {
    "q": "input",
    "k": "input",
    "v": "input",
    "gate": "mid",
    "up": "mid",
}


@dataclass(frozen=True)
class ResidualSpec:
    """Where and what a residual target adds at alpha = 1: `vec_D`."""

    layer: int
    module: str
    vec_D: np.ndarray


def _layers(peft_model: nn.Module):
    return peft_model.get_base_model().get_decoder().layers


def lora_a_direction(
    peft_model: nn.Module, layer: int, module: str, rank_slot: int, unit: bool = True
) -> np.ndarray:
    """Row `rank_slot` of the lora_A of `module` in `layer` (unit length if asked)."""
    if module not in RESIDUAL_MODULES:
        raise ValueError(
            f"L{layer}.{module}: {module}_proj reads no residual stream, so its "
            f"lora_A is no residual direction (only {sorted(RESIDUAL_MODULES)})"
        )
    block = _layers(peft_model)[layer]
    parent = block.self_attn if RESIDUAL_MODULES[module] == "input" else block.mlp
    lora = getattr(parent, f"{module}_proj")
    (name,) = [a for a in lora.active_adapters if a in lora.lora_A]
    row_D = lora.lora_A[name].weight[rank_slot].detach().double().cpu().numpy()
    return row_D / np.linalg.norm(row_D) if unit else row_D


@torch.no_grad()
def mean_residual_norm(runner, sequences, layer: int, module: str) -> float:
    """Mean L2 norm of the residual a component reads, over the counted tokens
    of `sequences` ((input_ids, scope) pairs), from unsteered passes of a
    `lorascope.ablation.kl.PrefixRunner`."""
    where = RESIDUAL_MODULES[module]
    if where == "mid" and not runner.split:
        raise ValueError(
            f"residual steering of {module}_proj needs decoder layers of the "
            "pre-norm form listed in lorascope.ablation.kl.SPLIT_LAYERS"
        )
    device = next(runner.model.parameters()).device
    total, count = 0.0, 0
    for ids_T, scope_T in sequences:
        runner.reference(ids_T[None].to(device))
        h_TD = (runner.inputs if where == "input" else runner.mids)[layer][0]
        norms_T = h_TD.double().norm(dim=-1)[scope_T.to(device)]
        total += float(norms_T.sum())
        count += int(norms_T.numel())
    return total / max(count, 1)


class ResidualShift:
    """A hook adding `scale_V[v] * vec_D` to row v of the residual a component
    reads; inactive while `scale_V` is None. `mask_T` (bool [T]) limits it to
    some positions of a full-sequence forward."""

    def __init__(self, peft_model: nn.Module, spec: ResidualSpec):
        block = _layers(peft_model)[spec.layer]
        self.vec_D = torch.as_tensor(spec.vec_D)
        self.scale_V: torch.Tensor | None = None
        self.mask_T: torch.Tensor | None = None
        if RESIDUAL_MODULES[spec.module] == "input":
            self.handle = block.register_forward_pre_hook(self._pre, with_kwargs=True)
        else:  # the attention output is added to the residual that feeds the MLP
            self.handle = block.self_attn.register_forward_hook(self._post)

    def _shift(self, h_BTD: torch.Tensor) -> torch.Tensor:
        like = dict(device=h_BTD.device, dtype=h_BTD.dtype)
        add_VTD = self.scale_V.to(**like)[:, None, None] * self.vec_D.to(**like)
        if self.mask_T is not None:
            add_VTD = add_VTD * self.mask_T.to(**like)[None, :, None]
        return h_BTD + add_VTD

    def _pre(self, _module, args, kwargs):
        if self.scale_V is None:
            return None
        if args:
            return (self._shift(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self._shift(kwargs["hidden_states"])}

    def _post(self, _module, _inputs, output):
        if self.scale_V is None:
            return None
        if isinstance(output, tuple):
            return (self._shift(output[0]), *output[1:])
        return self._shift(output)

    def remove(self) -> None:
        self.handle.remove()


def residual_targets(
    targets: list[Target],
    table: pl.DataFrame,
    peft_model: nn.Module,
    runner,
    sequences,
    unit: bool = True,
) -> list[Target]:
    """A residual target per component target that reads the residual stream
    (o/down are skipped, with a log line): lora_A direction x mean norm."""
    out = []
    for t in targets:
        if t.kind != "component":
            continue
        row = table.filter(pl.col("index") == t.id).row(0, named=True)
        if row["module"] not in RESIDUAL_MODULES:
            log.warning(
                "no residual-stream variant of %s: %s_proj does not read the "
                "residual stream", t.label, row["module"],
            )  # fmt: skip
            continue
        norm = mean_residual_norm(runner, sequences, row["layer"], row["module"])
        vec_D = norm * lora_a_direction(
            peft_model, row["layer"], row["module"], row["rank_slot"], unit
        )
        spec = ResidualSpec(row["layer"], row["module"], vec_D)
        zero_C = np.zeros_like(t.delta_C)
        out.append(Target("residual", t.id, f"resid {t.label}", t.selection,
                          zero_C, spec))  # fmt: skip
    return out
