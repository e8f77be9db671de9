"""The two passes of rule `model_diff`: the full fine-tune alone, then the base
model with the rank-1 adapter (on and off).

Pass 1 (`store_full_states`) runs the full fine-tune over every sequence and
stores its residual after every layer, [L, T, D] per sequence, in the model's
dtype (safetensors, one file per sequence). Pass 2 (`measure`) loads the base
model + adapter instead (the full model is gone: at paper scale two 32B
models never share a card) with the full fine-tune's final norm and
unembedding only (`states.Head.with_weights`), and per sequence:

- runs the rank-1 model (adapter on) and the base (adapter off) and takes
  Δh_full = h_full - h_base, Δh_rank1 = h_rank1 - h_base at every layer;
- accumulates, per layer, the sums the shares are ratios of (`SUMS`): token
  count, Σ|Δf|², Σ|Δr|², Σ<Δf,Δr>, Σ|Δf-Δr|², Σ|P_W Δf|² (write subspace),
  Σ|P_S Δf|² (top SAE features' writes), and Σ Δf (for centring);
- per token, KL(full || base) and KL(full || rank-1); per layer l, KL(full ||
  base with its layer-l output replaced by h_base + P_W Δh_full) and by
  h_full itself (the most a patch at that layer can recover), the base's
  later layers recomputed (`states.Trunk.rerun_after`).

Sums are kept per sequence, so intervals resample sequences
(`lorascope.diffing.tables`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lorascope.diffing.states import Head, Trunk, head_kl

__all__ = [
    "SUMS",
    "Measured",
    "Text",
    "measure",
    "missing_states",
    "store_full_states",
]

SUMS = ("n", "ff", "rr", "fr", "ee", "pw", "ps")


@dataclass(frozen=True)
class Text:
    """One sequence: where it comes from (`train` or a benchmark), its row
    there, its token ids and the positions counted (bool [T]; a position
    counts for its residual and its next-token distribution)."""

    source: str
    doc: int
    ids_T: torch.Tensor
    scope_T: torch.Tensor


@dataclass
class Measured:
    """Per sequence s and layer l: sums_SLK (K = SUMS), sum of Δh_full
    (sumvec_SLD); summed KL over counted tokens of the base patched at layer
    l with the projection (kl_proj_SL) and with h_full (kl_whole_SL); per
    sequence, per token KL(full || base) and KL(full || rank-1) (0 outside
    the scope)."""

    sums_SLK: np.ndarray
    sumvec_SLD: np.ndarray
    kl_proj_SL: np.ndarray
    kl_whole_SL: np.ndarray
    kl_base: list[np.ndarray] = field(default_factory=list)
    kl_rank1: list[np.ndarray] = field(default_factory=list)
    samples: list[list[np.ndarray]] = field(default_factory=list)
    """Per layer, the sampled tokens' Δh_full rows (lorascope.diffing.principal)."""


def _state_file(folder: Path, i: int) -> Path:
    return Path(folder) / f"seq-{i:05d}.safetensors"


def missing_states(texts: Sequence[Text], folder: str | Path, key: str) -> list[int]:
    """Texts whose pass-1 states are not in `folder` for this `key` (what
    made them: the full fine-tune's files, its dtype, ...). A folder made
    under another key is emptied first: a killed or failed run's states are
    reused only for the same model, and only where the stored token ids are
    this text's."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    manifest = folder / "KEY"
    if folder.exists() and (not manifest.is_file() or manifest.read_text() != key):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest.write_text(key)
    missing = []
    for i, text in enumerate(texts):
        path = _state_file(folder, i)
        try:
            with safe_open(str(path), framework="pt") as f:
                same = torch.equal(f.get_tensor("ids"), text.ids_T.long())
        except (OSError, KeyError, SafetensorError):  # absent, cut short, foreign
            same = False
        if not same:
            missing.append(i)
    return missing


@torch.no_grad()
def store_full_states(
    full_model: nn.Module,
    texts: Sequence[Text],
    folder: str | Path,
    log=None,
    only: Sequence[int] | None = None,
) -> None:
    """Pass 1: the full fine-tune's residual after every layer, per text
    (`only`: these texts' indices; the token ids are stored beside)."""
    from safetensors.torch import save_file

    trunk = Trunk(full_model)
    device = next(full_model.parameters()).device
    todo = range(len(texts)) if only is None else only
    for n, i in enumerate(todo):
        ids_T = texts[i].ids_T
        states_LTD = trunk.run(ids_T[None].to(device))
        tmp = _state_file(folder, i).with_suffix(".tmp")
        save_file({"states": states_LTD.cpu().contiguous(),
                   "ids": ids_T.long().contiguous()}, str(tmp))  # fmt: skip
        tmp.replace(_state_file(folder, i))
        if log and (n + 1) % 16 == 0:
            log.info("full fine-tune: %d / %d sequences", n + 1, len(todo))


def _project(delta_TD: torch.Tensor, basis_KD: torch.Tensor) -> torch.Tensor:
    if len(basis_KD) == 0:
        return torch.zeros_like(delta_TD)
    return (delta_TD @ basis_KD.T) @ basis_KD


@torch.no_grad()
def measure(
    peft_model: nn.Module,
    full_head: Head,
    texts: Sequence[Text],
    folder: str | Path,
    write_bases: list[torch.Tensor],
    sae_bases: list[torch.Tensor],
    logit_chunk: int = 512,
    sample_tokens: int = 0,
    seed: int = 0,
) -> Measured:
    """Pass 2 (module docstring); `write_bases` / `sae_bases`: per layer an
    orthonormal basis [k, D] (lorascope.diffing.subspaces). `sample_tokens`:
    counted tokens (spread evenly over the texts, seeded) whose Δh_full rows
    are kept per layer in `samples`."""
    from safetensors.torch import load_file

    trunk, base_head = Trunk(peft_model), Head.of(peft_model)
    device = next(peft_model.parameters()).device
    n_layers = len(trunk.layers)
    if len(write_bases) != n_layers or len(sae_bases) != n_layers:
        raise ValueError(f"one subspace per layer expected ({n_layers})")
    # Differences and projections in float32 at least (bf16 states differ in
    # their last bits; the squares are summed over many tokens).
    work = torch.float64 if peft_model.dtype == torch.float64 else torch.float32
    w_bases = [b.to(device, work) for b in write_bases]
    s_bases = [b.to(device, work) for b in sae_bases]
    d_model = trunk.norm.weight.shape[-1]
    n_texts = len(texts)
    out = Measured(
        sums_SLK=np.zeros((n_texts, n_layers, len(SUMS))),
        sumvec_SLD=np.zeros((n_texts, n_layers, d_model)),
        kl_proj_SL=np.zeros((n_texts, n_layers)),
        kl_whole_SL=np.zeros((n_texts, n_layers)),
        samples=[[] for _ in range(n_layers)],
    )
    per_text = -(-sample_tokens // max(n_texts, 1))
    gen = torch.Generator().manual_seed(seed)
    for s, text in enumerate(texts):
        ids_1T = text.ids_T[None].to(device)
        scope_T = text.scope_T.to(device)
        # States stay on the host; one layer at a time goes to the card.
        h_full_LTD = load_file(str(_state_file(folder, s)))["states"]
        if h_full_LTD.shape[:2] != (n_layers, ids_1T.shape[1]):
            raise ValueError(
                f"stored full-model states of sequence {s} have shape "
                f"{tuple(h_full_LTD.shape)}, expected ({n_layers}, "
                f"{ids_1T.shape[1]}, D): a stale or foreign state file"
            )
        counted = torch.nonzero(text.scope_T).flatten()
        picked = counted[torch.randperm(len(counted), generator=gen)[:per_text]]
        p_full_TX = full_head.log_probs(h_full_LTD[-1].to(device), logit_chunk)
        h_rank1_LTD = trunk.run(ids_1T)
        kl_rank1_T = head_kl(p_full_TX, base_head, h_rank1_LTD[-1:].to(device),
                             logit_chunk)[0]  # fmt: skip
        with _adapter_off(peft_model):
            h_base_LTD = trunk.run(ids_1T)  # kwargs kept for the reruns below
            kl_base_T = head_kl(p_full_TX, base_head, h_base_LTD[-1:].to(device),
                                logit_chunk)[0]  # fmt: skip
            for layer in range(n_layers):
                full_TD = h_full_LTD[layer].to(device, work)
                base_TD = h_base_LTD[layer].to(device, work)
                df_TD = full_TD - base_TD
                dr_TD = h_rank1_LTD[layer].to(device, work) - base_TD
                pw_TD = _project(df_TD, w_bases[layer])
                ps_TD = _project(df_TD, s_bases[layer])
                m = scope_T
                sums = [
                    m.sum(),
                    (df_TD[m] ** 2).sum(),
                    (dr_TD[m] ** 2).sum(),
                    (df_TD[m] * dr_TD[m]).sum(),
                    ((df_TD[m] - dr_TD[m]) ** 2).sum(),
                    (pw_TD[m] ** 2).sum(),
                    (ps_TD[m] ** 2).sum(),
                ]
                out.sums_SLK[s, layer] = [float(x) for x in sums]
                out.sumvec_SLD[s, layer] = df_TD[m].sum(0).double().cpu().numpy()
                if len(picked):
                    rows = df_TD[picked.sort().values.to(device)]
                    out.samples[layer].append(rows.float().cpu().numpy())
                rows_VTD = torch.stack([base_TD + pw_TD, full_TD])
                final_VTD = trunk.rerun_after(layer, rows_VTD.to(h_base_LTD.dtype))
                kl_VT = head_kl(p_full_TX, base_head, final_VTD, logit_chunk)
                kl_V = (kl_VT * scope_T).sum(-1).double().cpu().numpy()
                out.kl_proj_SL[s, layer], out.kl_whole_SL[s, layer] = kl_V
        out.kl_base.append((kl_base_T * scope_T).double().cpu().numpy())
        out.kl_rank1.append((kl_rank1_T * scope_T).double().cpu().numpy())
    return out


def _adapter_off(peft_model: nn.Module):
    """PEFT's context that runs the base model (every adapter layer skipped)."""
    if not hasattr(peft_model, "disable_adapter"):
        raise TypeError(f"{type(peft_model).__name__} is not a PEFT model")
    return peft_model.disable_adapter()
