"""Matching one member's units to another's (rule `sweep_persistence`).

- `one_to_one`: the assignment maximising the summed |correlation|
  (scipy's `linear_sum_assignment`, the Hungarian method): each reference
  unit gets at most one partner and no partner is used twice, so one
  feature of the other member cannot vouch for several of the reference's.
- `subspace_r`: a rank-1 direction may live, rotated, across the r slots
  of the same module in a rank-r member (a rank-r LoRA is defined up to an
  r x r rotation of its slots), so a single slot can miss it. The multiple
  correlation of a reference scalar with all of that module's scalars of
  the other member, R = sqrt(c^T C^-1 c), is invariant to the rotation.
- `lora_cosines`: decoder cosines of LoRA directions, per module (the base
  model is shared, so a module's input and output spaces align across
  members): |cos| of lora_A rows (what a direction reads) and of lora_B
  columns (what it writes), sign-invariant (A row and B column flip
  together without changing the adapter).
- `sae_cosines`: SAE decoder cosines, only when both members' SAEs read the
  same scalar layout (the same components, same order). A scalar's scale
  and sign are the member's own (a LoRA direction can come out negated or
  rescaled), so each decoder is expressed per scalar standard deviation
  and the other member's scalars are sign-aligned to the reference's by
  the sign of their activation correlation before the cosine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors import safe_open
from scipy.optimize import linear_sum_assignment

__all__ = [
    "adapter_factors",
    "lora_cosines",
    "one_to_one",
    "sae_cosines",
    "subspace_r",
]


def one_to_one(score_PQ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(partner per row, or -1; the partner's score) maximising the total
    score with each column used at most once."""
    p = score_PQ.shape[0]
    match = np.full(p, -1, dtype=np.int64)
    value = np.full(p, np.nan)
    if score_PQ.size == 0:
        return match, value
    rows, cols = linear_sum_assignment(score_PQ, maximize=True)
    match[rows] = cols
    value[rows] = score_PQ[rows, cols]
    return match, value


def subspace_r(
    corr_PQ: np.ndarray,
    groups_of_P: Sequence[int],
    within: Sequence[np.ndarray],
    groups: Sequence[np.ndarray],
) -> np.ndarray:
    """Multiple correlation of each reference unit p with the other member's
    units of its group (`groups[groups_of_P[p]]`, -1: no such group, NaN);
    `within[g]` is the correlation matrix of group g's units."""
    out = np.full(corr_PQ.shape[0], np.nan)
    for p, g in enumerate(groups_of_P):
        if g < 0:
            continue
        c = corr_PQ[p, groups[g]]
        # lstsq: a constant or duplicated slot makes the matrix singular
        beta = np.linalg.lstsq(within[g], c, rcond=1e-10)[0]
        out[p] = float(np.sqrt(np.clip(c @ beta, 0.0, 1.0)))
    return out


def adapter_factors(adapter_dir: Path | str) -> dict[str, dict[str, torch.Tensor]]:
    """module name -> {"A": lora_A [r, d_in], "B": lora_B [d_out, r]}, float64."""
    path = Path(adapter_dir) / "adapter_model.safetensors"
    out: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            m = re.match(
                r"(?:base_model\.model\.)?(.*)\.lora_([AB])(?:\.\w+)?\.weight$", key
            )
            if m:
                out.setdefault(m.group(1), {})[m.group(2)] = f.get_tensor(key).double()
    return out


def _unit(v: torch.Tensor) -> torch.Tensor:
    n = v.norm()
    return v / n if n > 0 else v


def lora_cosines(
    ref_components: pl.DataFrame,
    other_components: pl.DataFrame,
    ref_factors: dict,
    other_factors: dict,
    match: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per reference scalar: `read_cos`/`write_cos` of its matched partner
    (NaN when the partner sits in another module or there is none) and
    `read_cos_best`/`write_cos_best`, the best slot of the same module."""
    n = ref_components.height
    out = {
        k: np.full(n, np.nan)
        for k in ("read_cos", "write_cos", "read_cos_best", "write_cos_best")
    }
    other_rows = other_components.select("name", "rank_slot").rows()
    for p, (name, slot) in enumerate(ref_components.select("name", "rank_slot").rows()):
        if name not in other_factors:
            continue
        a = _unit(ref_factors[name]["A"][slot])
        b = _unit(ref_factors[name]["B"][:, slot])
        a_o = other_factors[name]["A"]  # (r_o, d_in)
        b_o = other_factors[name]["B"]  # (d_out, r_o)
        read = (a_o @ a).abs() / a_o.norm(dim=1).clamp_min(1e-300)
        write = (b @ b_o).abs() / b_o.norm(dim=0).clamp_min(1e-300)
        out["read_cos_best"][p] = float(read.max())
        out["write_cos_best"][p] = float(write.max())
        q = int(match[p])
        if q >= 0 and other_rows[q][0] == name:
            out["read_cos"][p] = float(read[other_rows[q][1]])
            out["write_cos"][p] = float(write[other_rows[q][1]])
    return out


def sae_cosines(
    w_ref_FC: torch.Tensor,
    w_other_GC: torch.Tensor,
    std_ref_C: np.ndarray,
    std_other_C: np.ndarray,
    sign_C: np.ndarray,
) -> np.ndarray:
    """Decoder cosines (F, G) between two SAEs over the same scalars:
    each decoder row divided by its scalars' standard deviations (a decoder
    in units of each scalar's spread), the other's scalars multiplied by
    `sign_C` (the sign of each scalar's correlation with the reference's)."""

    def rows(w, std, sign):
        scale = np.where(std > 0, sign / np.where(std > 0, std, 1.0), 0.0)
        x = w.detach().cpu().double() * torch.as_tensor(scale)  # W_dec may be on a GPU
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)

    ones = np.ones_like(sign_C)
    return (
        rows(w_ref_FC, std_ref_C, ones) @ rows(w_other_GC, std_other_C, sign_C).T
    ).numpy()
