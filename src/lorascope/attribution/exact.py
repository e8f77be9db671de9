"""Exact removal effects on the targets, to validate the estimates (rule
`feature_attribution`).

The same edits the causal stage measures KL with, read out as the targets
instead: a component's scalar scaled by 0, everything downstream recomputed
(`lorascope.ablation.kl`, relative to the full LoRA); an SAE latent's part
subtracted from the frozen reconstruction (`lorascope.causal.feature_kl`,
relative to the floor run). Both reuse `PrefixRunner`: the reference pass
keeps each layer's input, a removal reruns only from the first layer it
touches, several removals share a batch. A latent that never fires in a
sequence edits nothing there: its effect is exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from lorascope.ablation.kl import PrefixRunner, build_ablations
from lorascope.ablation.scalar_control import ScalarControl
from lorascope.attribution.targets import TargetSequence, target_metrics
from lorascope.causal.feature_kl import SaeMap, removed_scalars, start_layers

__all__ = ["ExactEffects", "exact_effects"]


@dataclass
class ExactEffects:
    """Measured change of each target, per sequence; NaN where a sequence
    has no position for the target or the unit was not measured."""

    targets: list[str]
    lora_KSC: np.ndarray
    sae_KSF: np.ndarray


def _readout(runner: PrefixRunner, hidden_VTD, seq: TargetSequence, union_P):
    """Targets per variant from final pre-norm hidden states."""
    logits_VPX = runner.lm_head(
        runner.norm(hidden_VTD[:, union_P.to(hidden_VTD.device)])
    )
    return target_metrics(logits_VPX, seq, union_P)


def _store(out_KSU, targets, s, units, values: dict, ref: dict) -> None:
    for t, v_V in values.items():
        out_KSU[targets.index(t), s, units] = (v_V - ref[t]).double().cpu().numpy()


@torch.no_grad()
def exact_effects(
    model: nn.Module,
    control: ScalarControl,
    sae_map: SaeMap,
    table: pl.DataFrame,
    seqs: list[TargetSequence],
    targets: list[str],
    latents: np.ndarray,
    *,
    variants_per_forward: int = 8,
) -> ExactEffects:
    """Exact effect of zeroing every component and removing each of `latents`."""
    runner = PrefixRunner(model, control)
    device = next(model.parameters()).device
    n_c, n_f = control.n_components, sae_map.dir_FC.shape[0]
    lora = np.full((len(targets), len(seqs), n_c), np.nan)
    sae = np.full((len(targets), len(seqs), n_f), np.nan)
    comps = [a for a in build_ablations(table) if a.kind == "component"]
    latents = np.asarray(latents, dtype=np.int64)
    remove_GF = np.zeros((len(latents), n_f), dtype=bool)
    remove_GF[np.arange(len(latents)), latents] = True
    starts = start_layers(remove_GF, sae_map.dir_FC, table, runner.split)
    for s, seq in enumerate(seqs):
        union_P = seq.union_P
        if not len(union_P):
            continue
        ids_1T = seq.ids_T[None].to(device)
        scalars_TC = runner.reference(ids_1T)
        ref = _readout(runner, runner.final, seq, union_P)
        by_start: dict[tuple, list[int]] = {}
        for i, ab in enumerate(comps):
            by_start.setdefault(
                (ab.start_layer, ab.mlp_start and runner.split), []
            ).append(i)
        for (start, mlp), group in sorted(by_start.items()):
            for b in range(0, len(group), variants_per_forward):
                batch = group[b : b + variants_per_forward]
                mask_VC = np.stack([comps[i].mask_C for i in batch])
                mult_VC = torch.from_numpy(~mask_VC).to(device, scalars_TC.dtype)
                hidden = runner.run_from(start, mult_VC, None, mlp_start=bool(mlp))
                units = [int(comps[i].mask_C.argmax()) for i in batch]
                _store(
                    lora, targets, s, units, _readout(runner, hidden, seq, union_P), ref
                )
        z_TF, recon_TC = sae_map.codes(scalars_TC)
        like = dict(device=device, dtype=scalars_TC.dtype)
        runner.reference(ids_1T, recon_TC[None].to(**like))
        floor = _readout(runner, runner.final, seq, union_P)
        fires_G = (z_TF != 0).any(0).numpy()[latents]
        for t in floor:  # a latent that does not fire here changes nothing
            sae[targets.index(t), s, latents[~fires_G]] = 0.0
        todo: dict[tuple, list[int]] = {}
        for g in np.flatnonzero(fires_G & np.array([st >= 0 for st, _ in starts])):
            todo.setdefault(starts[g], []).append(int(g))
        for t in floor:  # zero decoder rows edit nothing either
            zero = [g for g in np.flatnonzero(fires_G) if starts[g][0] < 0]
            sae[targets.index(t), s, latents[zero]] = 0.0
        for (start, mlp), group in sorted(todo.items()):
            for b in range(0, len(group), variants_per_forward):
                batch = group[b : b + variants_per_forward]
                set_VTC = removed_scalars(
                    recon_TC, z_TF, sae_map.dir_FC, remove_GF, batch
                )
                hidden = runner.run_from(
                    start, mlp_start=mlp, set_VTC=set_VTC.to(**like)
                )
                values = _readout(runner, hidden, seq, union_P)
                _store(sae, targets, s, latents[batch], values, floor)
    return ExactEffects(list(targets), lora, sae)
