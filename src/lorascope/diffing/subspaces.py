"""The residual subspaces Δh_full is projected on, per layer (rule `model_diff`).

The residual after layer l holds what every adapted module of layers <= l
wrote into it directly: `scalar * scaling * lora_B` of the residual writers
(o_proj, down_proj; `lorascope.causal.direct_effects.writes`). So the write
subspace at layer l is the span of those lora_B vectors of layers <= l
(2(l+1) directions at rank 1), and an SAE feature's write at layer l is its
decoder row (raw-scalar space) times the same vectors, summed over layers
<= l. Everything else the adapter changes reaches the residual through later
computation, outside these spans.

A uniformly random subspace of dimension k in D dimensions holds k/D of any
vector's squared norm in expectation: the chance level each share is
compared with (`chance`).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["chance", "cumulative_bases", "orthonormal", "sae_writes"]


def orthonormal(vectors_KD: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis [k, D] of the rows' span (k = numerical rank, float64).
    Singular values under rtol x the largest are dropped (dependent rows)."""
    d = vectors_KD.shape[-1]
    if len(vectors_KD) == 0 or not vectors_KD.any():
        return torch.zeros(0, d, dtype=torch.float64)
    _, s, vh = torch.linalg.svd(vectors_KD.double(), full_matrices=False)
    return vh[s > rtol * s[0]]


def cumulative_bases(
    write_CD: torch.Tensor, layer_C: np.ndarray, n_layers: int
) -> list[torch.Tensor]:
    """Per layer l, the orthonormal basis of the writes of components in
    layers <= l (rows of `write_CD` that are zero, non-writers, add nothing)."""
    return [
        orthonormal(write_CD[torch.from_numpy(layer_C <= layer)])
        for layer in range(n_layers)
    ]


def sae_writes(
    dir_GC: torch.Tensor, write_CD: torch.Tensor, layer_C: np.ndarray, n_layers: int
) -> list[torch.Tensor]:
    """Per layer l, each of G SAE features' residual write accumulated over
    layers <= l, [G, D]: sum_c dir[g, c] write[c] for components c in layers
    <= l."""
    out = []
    for layer in range(n_layers):
        keep_C = torch.from_numpy(layer_C <= layer)
        out.append(dir_GC[:, keep_C].double() @ write_CD[keep_C].double())
    return out


def chance(dim: int, d_model: int) -> float:
    """Expected share of a vector's squared norm in a random dim-subspace."""
    return dim / d_model
