"""Attribution patching for every LoRA component and SAE latent (rule
`feature_attribution`).

Removing an activation a moves a target m by about -a . dm/da (first order).
Both removals the causal stage measures exactly have a one-pass gradient:

- a LoRA component c is ablated by scaling its scalar by 0 with everything
  downstream recomputed (`lorascope.ablation.kl`): with the scalars scaled
  by a leaf `mult_C` (`ScalarControl.mult_VC`, 1 = unedited), the effect is
  -dm/dmult_c at mult = 1 (= -sum_t s_tc dm/ds_tc, total derivative);
- an SAE latent f is removed from the *frozen* reconstruction r_TC
  (`lorascope.causal.feature_kl`: its part z_tf dir_fC subtracted, relative
  to the floor run): with the scalars set to a leaf r_TC
  (`ScalarControl.set_VTC`), the effect is -sum_t z_tf (dir_f . dm/dr_t),
  evaluated at the floor, for every latent from the one gradient [T, C].

So one forward and one backward per target give every component's (at the
full LoRA) and every latent's (at the floor) estimate. `ig_steps` > 1
replaces the gradient at the unedited point by its mean over `ig_steps`
midpoints of the path that scales every scalar (or every code) from 1 to 0
together: integrated gradients as Marks et al. (2024, Sparse Feature
Circuits) use it; it costs `ig_steps` forwards and backwards. That path
gives each unit's share of removing all units together, not the effect of
removing it alone (on the embedded run it ranked single removals worse than
first order). A per-unit correction for saturation (the AtP* fixes, Kramar
et al. 2024, or a path per unit) is not implemented: the validation table
says where first order fails.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lorascope.ablation.scalar_control import ScalarControl
from lorascope.attribution.targets import TargetSequence, target_metrics
from lorascope.causal.feature_kl import SaeMap

__all__ = [
    "Attribution",
    "attribute",
    "checkpointed_layers",
    "logit_readout",
    "needs_checkpoint",
]

Readout = Callable[[nn.Module, TargetSequence], dict[str, torch.Tensor]]


@dataclass
class Attribution:
    """Estimated change of each target when removing each unit, per sequence
    (NaN where the sequence has no position for the target)."""

    targets: list[str]
    lora_KSC: np.ndarray  # [targets, sequences, components]
    sae_KSF: np.ndarray  # [targets, sequences, latents]
    positions_KS: np.ndarray  # positions each target reads
    frac_active_F: np.ndarray  # share of the sequences' tokens where z_f > 0
    mean_code_F: np.ndarray


def logit_readout(model: nn.Module, seq: TargetSequence) -> dict[str, torch.Tensor]:
    """Targets of one sequence from a forward that computes logits only at
    the positions the targets read (transformers' `logits_to_keep`)."""
    device = next(model.parameters()).device
    union_P = seq.union_P
    out = model(
        input_ids=seq.ids_T[None].to(device),
        use_cache=False,
        logits_to_keep=union_P.to(device),
    )
    return target_metrics(out.logits, seq, union_P)


@contextlib.contextmanager
def _no_weight_grads(model: nn.Module):
    """Gradients reach the edits only: no weight keeps its activations for a
    weight gradient (the backward costs about one forward)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextlib.contextmanager
def checkpointed_layers(model: nn.Module, on: bool = True):
    """Keep only each decoder layer's input for the backward and recompute
    the layer there (torch.utils.checkpoint, non-reentrant): what makes a
    backward through every layer fit beside 32B weights on one card. The
    hooks edit the recomputation exactly as the forward (the control is not
    changed until the gradients are taken)."""
    layers = model.get_base_model().get_decoder().layers if on else []
    for layer in layers:
        layer.forward = functools.partial(
            checkpoint, layer.forward, use_reentrant=False
        )
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def needs_checkpoint(model: nn.Module, tokens: int) -> bool:
    """Whether a backward through every layer of a `tokens`-long sequence
    would take more than half the free memory of the model's CUDA card
    (lorascope.core.memory's layer working set, as the resource model)."""
    from lorascope.core.memory import ModelShape

    param = next(model.parameters())
    if param.device.type != "cuda":
        return False
    shape = ModelShape.from_config(model.config.to_dict())
    nbytes = torch.finfo(param.dtype).bits // 8
    kept = shape.layers * shape.layer_working_bytes(tokens, nbytes)
    free, _ = torch.cuda.mem_get_info(param.device)
    return kept > 0.5 * free


def _grads(values: dict[str, torch.Tensor], leaf: torch.Tensor) -> dict:
    """d value / d leaf per target, one backward each (the graph is kept
    until the last)."""
    out, names = {}, list(values)
    for i, name in enumerate(names):
        (out[name],) = torch.autograd.grad(
            values[name].sum(), leaf, retain_graph=i < len(names) - 1
        )
    return out


def attribute(
    model: nn.Module,
    control: ScalarControl,
    sae_map: SaeMap,
    seqs: list[TargetSequence],
    targets: list[str],
    *,
    ig_steps: int = 1,
    readout: Readout = logit_readout,
    checkpoint_layers: bool = False,
) -> Attribution:
    """Every component's and every latent's estimated effect on each target
    (`checkpoint_layers`: see `checkpointed_layers`)."""
    if ig_steps < 1:
        raise ValueError(f"attribution.ig_steps: {ig_steps} < 1")
    alphas = [0.0] if ig_steps == 1 else [(i + 0.5) / ig_steps for i in range(ig_steps)]
    device = next(model.parameters()).device
    n_c, n_f = control.n_components, sae_map.dir_FC.shape[0]
    lora = np.full((len(targets), len(seqs), n_c), np.nan)
    sae = np.full((len(targets), len(seqs), n_f), np.nan)
    positions = np.array([[len(s.positions[t]) for s in seqs] for t in targets])
    active_F, code_F = torch.zeros(n_f), torch.zeros(n_f, dtype=torch.float64)
    n_tokens = 0
    dtype = torch.promote_types(next(model.parameters()).dtype, torch.float32)
    with _no_weight_grads(model), checkpointed_layers(model, checkpoint_layers):
        for s, seq in enumerate(seqs):
            present = [t for t in targets if len(seq.positions[t])]
            g_lora = dict.fromkeys(present, 0.0)
            scalars_TC = None
            for a in alphas if present else []:
                mult_1C = torch.full((1, n_c), 1.0 - a, dtype=dtype, device=device)
                g, rec = _edited(model, control, seq, readout, mult_1C.requires_grad_(),
                                 "mult_VC", record=a == 0.0)  # fmt: skip
                scalars_TC = rec if a == 0.0 else scalars_TC
                for t in present:
                    g_lora[t] = g_lora[t] + g[t][0].cpu() / len(alphas)
            if scalars_TC is None:  # integrated gradients, or no target here
                scalars_TC = _clean_scalars(model, control, seq)
            z_TF, recon_TC = sae_map.codes(scalars_TC)
            active_F += (z_TF > 0).sum(0)
            code_F += z_TF.sum(0).double()
            n_tokens += len(z_TF)
            g_sae = dict.fromkeys(present, 0.0)
            bias_C = sae_map.bias_C
            for a in alphas if present else []:
                point_TC = bias_C + (1.0 - a) * (recon_TC - bias_C)
                set_1TC = point_TC[None].to(device, dtype).requires_grad_()
                g, _ = _edited(model, control, seq, readout, set_1TC, "set_VTC")
                for t in present:
                    g_sae[t] = g_sae[t] + g[t][0].cpu() / len(alphas)
            for t in present:
                k = targets.index(t)
                lora[k, s] = -g_lora[t].double().numpy()  # mult 1 -> 0: delta = -1
                proj_TF = g_sae[t].to(sae_map.dtype) @ sae_map.dir_FC.T
                sae[k, s] = -(z_TF * proj_TF).sum(0).double().numpy()
    n = max(n_tokens, 1)
    return Attribution(
        list(targets), lora, sae, positions,
        (active_F / n).numpy(), (code_F / n).numpy(),
    )  # fmt: skip


def _edited(model, control, seq, readout, leaf, slot: str, record: bool = False):
    """Gradients of the targets with respect to `leaf` set as the control's
    `slot` (mult_VC or set_VTC) for one forward, and (`record`) the scalars
    that forward computed [T, C] (CPU)."""
    control.clear()
    setattr(control, slot, leaf)
    control.record = record
    try:
        values = readout(model, seq)
        scalars_TC = control.recorded()[0].cpu() if record else None
        return _grads(values, leaf), scalars_TC
    finally:
        control.clear()


@torch.no_grad()
def _clean_scalars(model, control: ScalarControl, seq: TargetSequence):
    """The unedited LoRA's scalars of one sequence [T, C] (float32, CPU)."""
    device = next(model.parameters()).device
    control.clear()
    control.record = True
    try:
        model(input_ids=seq.ids_T[None].to(device), use_cache=False, logits_to_keep=1)
        return control.recorded()[0].float().cpu()
    finally:
        control.clear()
