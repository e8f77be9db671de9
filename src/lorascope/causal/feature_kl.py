"""KL of removing single SAE features from the LoRA scalars (rule `feature_ablation`).

The rank-1 adapter acts only through its scalars, so an SAE feature's part in
the output is the part of the scalars it decodes to. Per sequence:

1. the full LoRA runs once (reference p, and the scalars s_TC it computes);
2. the SAE codes z_TF = encode(s_TC) and reconstruction r_TC = decode(z_TF);
3. the *floor* run replaces every scalar by r_TC (q_floor): KL(p || q_floor)
   is what the SAE's reconstruction error alone costs;
4. removing feature set g replaces the scalars by r_TC - sum_{f in g} z_Tf
   dir_fC (dir_fC = decode(e_f) - decode(0), the decoder row in the space of
   raw scalars) and reports KL(q_floor || q_g) (relative to the floor: a
   feature with a zero decoder row has KL exactly 0) and KL(p || q_g).

The replaced scalars are frozen (computed from the reference pass, not
recomputed downstream of an edit): "the feature's contribution" is defined
on the reference's scalars, and removing every feature leaves decode(0) at
every position (with a zero decoder bias: the LoRA with zero scalars).
Prefix reuse as in `lorascope.ablation.kl`: the floor run keeps each layer's
input, and a feature set recomputes only from the first layer its decoder
rows touch. A feature that never fires in a sequence edits nothing there:
its KL is 0 relative to the floor without a forward.

The SAE's replacement cost (`ReplacementLoss`, one more forward per
sequence): the zero run sets every scalar to 0 (the LoRA contributes
nothing), KL(p || q_zero) on the KL's tokens, and the next-token loss
(mean -log q(x_{t+1})) of the full, floor and zero runs on the loss-labelled
positions (`loss_scopes`: positions whose next token carries a loss label).
`lorascope.causal.feature_effects.sae_recovered` turns these into the
fractions recovered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from lorascope.ablation.kl import PrefixRunner, log_softmax, token_kl
from lorascope.ablation.scalar_control import ScalarControl

__all__ = [
    "FeatureKL",
    "ReplacementLoss",
    "SaeMap",
    "feature_ablation_kl",
    "naive_feature_kl",
    "removed_scalars",
    "start_layers",
]


class SaeMap:
    """An SAE as an affine map codes -> raw scalars (checked, not assumed)."""

    def __init__(self, sae, dtype: torch.dtype = torch.float32):
        self.sae = sae
        device, wdtype = sae.W_dec.device, sae.W_dec.dtype
        with torch.no_grad():
            eye_FF = torch.eye(sae.cfg.d_sae, dtype=wdtype, device=device)
            zero_1F = torch.zeros(1, sae.cfg.d_sae, dtype=wdtype, device=device)
            self.bias_C = sae.decode(zero_1F)[0].to(dtype).cpu()
            self.dir_FC = (sae.decode(eye_FF).to(dtype).cpu()) - self.bias_C
        self.dtype = dtype

    @torch.no_grad()
    def codes(self, scalars_TC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_TF, reconstruction r_TC); fails if decode is not affine in z."""
        sae = self.sae
        x_TC = scalars_TC.to(sae.W_dec.device, sae.W_dec.dtype)
        z_TF = sae.encode(x_TC)
        recon_TC = sae.decode(z_TF).to(self.dtype).cpu()
        z_TF = z_TF.to(self.dtype).cpu()
        affine_TC = self.bias_C + z_TF @ self.dir_FC
        # Rounding of a sum of the (few) active terms: n_active * eps * sum|term|
        # (Higham §3.1), with margin; a per-token normalisation moves outputs
        # by O(|output|).
        bound_TC = self.bias_C.abs() + z_TF.abs() @ self.dir_FC.abs()
        n_terms = int((z_TF != 0).sum(1).max()) + 2 if len(z_TF) else 2
        eps = max(torch.finfo(sae.W_dec.dtype).eps, torch.finfo(self.dtype).eps)
        tol_TC = 10 * n_terms * eps * (bound_TC + recon_TC.abs())
        if not ((recon_TC - affine_TC).abs() <= tol_TC).all():
            raise ValueError(
                "the SAE's decode is not affine in its codes (output normalisation "
                "per token?): feature contributions are not defined for it"
            )
        return z_TF, recon_TC


@dataclass
class ReplacementLoss:
    """Per sequence: KL(full || all scalars zeroed) on the KL's tokens; mean
    next-token loss of the full LoRA, of the reconstruction (floor) run and of
    the zero run on the loss-labelled positions, and how many there were."""

    kl_zero_S: np.ndarray
    loss_full_S: np.ndarray
    loss_floor_S: np.ndarray
    loss_zero_S: np.ndarray
    loss_tokens_S: np.ndarray


@dataclass
class FeatureKL:
    """Per feature set g and sequence s: KL relative to the floor and to the full
    LoRA; per sequence the floor; counted tokens; mean code per feature."""

    kl_floor_GS: np.ndarray
    kl_full_GS: np.ndarray
    floor_S: np.ndarray
    tokens_S: np.ndarray
    mean_code_F: np.ndarray
    frac_active_F: np.ndarray
    replacement: ReplacementLoss | None = None


def next_token_loss(logp_TX: torch.Tensor, ids_T: torch.Tensor, loss_T) -> float:
    """Summed -log p(x_{t+1}) over positions t with loss_T[t] (no last position)."""
    nll_T = -logp_TX[:-1].gather(-1, ids_T[1:, None])[:, 0]
    return float((nll_T * loss_T[:-1]).sum())


def start_layers(
    remove_GF: np.ndarray, dir_FC: torch.Tensor, table: pl.DataFrame, split: bool
) -> list[tuple[int, bool]]:
    """Per set: first layer its decoder rows touch, and whether only MLP
    components are touched there (the rerun starts after that attention)."""
    layer_C = table["layer"].to_numpy()
    mlp_C = table["group"].to_numpy() == "mlp"
    touched_GC = (remove_GF.astype(np.float64) @ (dir_FC.abs().numpy() > 0)) > 0
    out = []
    for touched_C in touched_GC:
        if not touched_C.any():
            out.append((-1, False))  # zero decoder rows: nothing to rerun
            continue
        start = int(layer_C[touched_C].min())
        out.append((start, split and bool(mlp_C[touched_C & (layer_C == start)].all())))
    return out


def removed_scalars(recon_TC, z_TF, dir_FC, remove_GF, groups) -> torch.Tensor:
    """Scalars with feature sets `groups` removed: [V, T, C]. Each set costs
    T x |set| x C (its own codes and decoder rows only)."""
    out = []
    for g in groups:
        idx = torch.from_numpy(np.flatnonzero(remove_GF[g]))
        out.append(recon_TC - z_TF[:, idx] @ dir_FC[idx])
    return torch.stack(out)


@torch.no_grad()
def feature_ablation_kl(
    peft_model: nn.Module,
    control: ScalarControl,
    sae_map: SaeMap,
    table: pl.DataFrame,
    remove_GF: np.ndarray,
    sequences: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    variants_per_forward: int = 8,
    logit_chunk: int = 512,
    prefix_reuse: bool = True,
    loss_scopes: list[torch.Tensor] | None = None,
) -> FeatureKL:
    """KL of removing each feature set (rows of bool `remove_GF` [G, F]), and
    the reconstruction's replacement cost (`FeatureKL.replacement`).

    loss_scopes: per sequence, bool [T]: positions whose next token carries a
    loss label (None: the KL scope)."""
    if loss_scopes is not None and [len(x) for x in loss_scopes] != [
        len(ids) for ids, _ in sequences
    ]:
        raise ValueError("loss_scopes: one mask per sequence, of its length")
    runner = PrefixRunner(peft_model, control)
    device = next(peft_model.parameters()).device
    n_sets, n_seq = len(remove_GF), len(sequences)
    kl_floor_GS, kl_full_GS = np.zeros((n_sets, n_seq)), np.zeros((n_sets, n_seq))
    floor_S, tokens_S = np.zeros(n_seq), np.zeros(n_seq, dtype=np.int64)
    rep = ReplacementLoss(*(np.zeros(n_seq) for _ in range(4)), np.zeros(n_seq, int))
    n_feat = sae_map.dir_FC.shape[0]
    code_sum_F, active_F = torch.zeros(n_feat, dtype=torch.float64), torch.zeros(n_feat)
    starts = start_layers(remove_GF, sae_map.dir_FC, table, runner.split)
    if not prefix_reuse:
        starts = [(s if s < 0 else 0, False) for s, _ in starts]
    for s, (ids_T, scope_T) in enumerate(sequences):
        ids_1T, scope_T = ids_T[None].to(device), scope_T.to(device)
        n_tok = max(int(scope_T.sum()), 1)
        tokens_S[s] = int(scope_T.sum())
        scalars_TC = runner.reference(ids_1T)
        runner.ref_logp(logit_chunk)
        full_logp_TX = runner.ref_logp_TX
        z_TF, recon_TC = sae_map.codes(scalars_TC)
        scope_cpu_T = scope_T.cpu()
        code_sum_F += z_TF[scope_cpu_T].sum(0).double()
        active_F += (z_TF[scope_cpu_T] != 0).sum(0)
        like = dict(device=device, dtype=scalars_TC.dtype)
        runner.reference(ids_1T, recon_TC[None].to(**like))
        runner.ref_logp(logit_chunk)
        floor_logp_TX = runner.ref_logp_TX
        floor_T = token_kl(full_logp_TX, floor_logp_TX)
        floor_S[s] = float((floor_T * scope_T).sum()) / n_tok
        loss_T = (scope_T if loss_scopes is None else loss_scopes[s]).to(device)
        _replacement(
            runner, rep, s, ids_1T[0], scope_T, loss_T, full_logp_TX, floor_logp_TX,
            logit_chunk,
        )  # fmt: skip
        fires_G = (remove_GF.astype(np.float64) @ (z_TF != 0).any(0).numpy()) > 0
        kl_full_GS[:, s] = floor_S[s]  # sets that edit nothing: q_g = q_floor
        todo = [g for g in range(n_sets) if fires_G[g] and starts[g][0] >= 0]
        for key in sorted({starts[g] for g in todo}):
            group = [g for g in todo if starts[g] == key]
            for b in range(0, len(group), variants_per_forward):
                batch = group[b : b + variants_per_forward]
                set_VTC = removed_scalars(
                    recon_TC, z_TF, sae_map.dir_FC, remove_GF, batch
                )
                hidden_VTD = runner.run_from(
                    key[0], mlp_start=key[1], set_VTC=set_VTC.to(**like)
                )
                sums = torch.zeros(2, len(batch), dtype=torch.float64, device=device)
                for t in range(0, hidden_VTD.shape[1], logit_chunk):
                    sl = slice(t, t + logit_chunk)
                    logq_VTX = runner.log_probs(hidden_VTD[:, sl])
                    for i, ref_TX in enumerate((floor_logp_TX, full_logp_TX)):
                        kl_VT = token_kl(ref_TX[sl], logq_VTX)
                        sums[i] += (kl_VT * scope_T[sl]).sum(-1).double()
                kl_floor_GS[batch, s] = (sums[0] / n_tok).cpu().numpy()
                kl_full_GS[batch, s] = (sums[1] / n_tok).cpu().numpy()
    n_all = max(int(tokens_S.sum()), 1)
    return FeatureKL(
        kl_floor_GS,
        kl_full_GS,
        floor_S,
        tokens_S,
        (code_sum_F / n_all).numpy(),
        (active_F / n_all).numpy(),
        rep,
    )


def _replacement(
    runner, rep, s, ids_T, scope_T, loss_T, full_logp_TX, floor_logp_TX, chunk
) -> None:
    """Sequence s's replacement cost: the full and floor runs' losses, and the
    zero run (every scalar 0, from layer 0; needs `runner.reference()` of this
    sequence first, for its layer-0 input), taken chunk by chunk."""
    n_loss = int(loss_T[:-1].sum())
    rep.loss_tokens_S[s] = n_loss
    per_token = max(n_loss, 1)
    rep.loss_full_S[s] = next_token_loss(full_logp_TX, ids_T, loss_T) / per_token
    rep.loss_floor_S[s] = next_token_loss(floor_logp_TX, ids_T, loss_T) / per_token
    like = dict(device=ids_T.device, dtype=runner.inputs[0].dtype)
    zero_1C = torch.zeros(1, runner.control.n_components, **like)
    hidden_TD = runner.run_from(0, mult_VC=zero_1C)[0]
    kl_sum = nll_sum = 0.0
    n_pos = len(ids_T)
    for t in range(0, n_pos, chunk):
        # Positions t..t+chunk predict tokens t+1..t+chunk+1: one token of overlap.
        sl = slice(t, min(t + chunk, n_pos))
        logq_TX = runner.log_probs(hidden_TD[sl])
        kl_sum += float((token_kl(full_logp_TX[sl], logq_TX) * scope_T[sl]).sum())
        ids_next = ids_T[t + 1 : sl.stop + 1]
        nll_T = -logq_TX[: len(ids_next)].gather(-1, ids_next[:, None])[:, 0]
        nll_sum += float((nll_T * loss_T[t : t + len(ids_next)]).sum())
    rep.kl_zero_S[s] = kl_sum / max(int(scope_T.sum()), 1)
    rep.loss_zero_S[s] = nll_sum / per_token


@torch.no_grad()
def naive_feature_kl(
    peft_model: nn.Module,
    control: ScalarControl,
    sae_map: SaeMap,
    remove_GF: np.ndarray,
    sequences: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: one full forward per feature set with its edited scalars.
    Returns (kl_floor_GS, kl_full_GS)."""
    device = next(peft_model.parameters()).device
    kl_floor_GS = np.zeros((len(remove_GF), len(sequences)))
    kl_full_GS = np.zeros_like(kl_floor_GS)

    def run(ids_1T, set_1TC=None, record=False):
        control.clear()
        control.set_VTC, control.record = set_1TC, record
        try:
            logits = peft_model(input_ids=ids_1T, use_cache=False).logits
            return log_softmax(logits[0]), (control.recorded()[0] if record else None)
        finally:
            control.clear()

    for s, (ids_T, scope_T) in enumerate(sequences):
        ids_1T, scope_T = ids_T[None].to(device), scope_T.to(device)
        n_tok = max(int(scope_T.sum()), 1)
        full_TX, scalars_TC = run(ids_1T, record=True)
        z_TF, recon_TC = sae_map.codes(scalars_TC)
        like = dict(device=device, dtype=scalars_TC.dtype)
        floor_TX, _ = run(ids_1T, recon_TC[None].to(**like))
        for g in range(len(remove_GF)):
            set_1TC = removed_scalars(recon_TC, z_TF, sae_map.dir_FC, remove_GF, [g])
            q_TX, _ = run(ids_1T, set_1TC.to(**like))
            for out, ref_TX in ((kl_floor_GS, floor_TX), (kl_full_GS, full_TX)):
                out[g, s] = float((token_kl(ref_TX, q_TX) * scope_T).sum()) / n_tok
    return kl_floor_GS, kl_full_GS
