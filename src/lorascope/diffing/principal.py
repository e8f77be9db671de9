"""Δh_full's top principal directions per layer, and how each LoRA direction
and SAE feature lines up with them (rule `model_diff`; the dashboards show it).

`measure` keeps a seeded sample of counted tokens' Δh_full per layer
(`diffing.pca_tokens` in all, spread evenly over the sequences); here the
sample is centred and its top `diffing.principal_directions` right singular
vectors are the principal directions, with the share of the sample's
variance each carries.

A component's residual-space direction: for o_proj / down_proj what it
writes (`lora_B` x scaling), compared at the residual after its layer; for
q / k / v what it reads from the residual after the previous layer (its
`lora_A` row times the input norm's weight: the scalar is (A ⊙ g) · h /
rms(h)), none for layer 0 (it reads the embeddings); for gate / up its
`lora_A` row times the post-attention norm's weight, compared at the residual
after its own layer (the stored site nearest to what it reads). An SAE
feature: its write at the layer where it writes most (its decoder row over
that layer's o/down components times their writes). Cosines are absolute
(a principal direction's sign is arbitrary).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch import nn

from lorascope.core.components import lora_modules

__all__ = [
    "component_directions",
    "feature_cosines",
    "principal_directions",
    "sae_strongest_writes",
]

WRITERS = ("o", "down")
INPUT_READERS = ("q", "k", "v")


def principal_directions(
    sample_ND: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """(top-n unit directions [k, D], share of the sample's variance each)
    of a centred sample; k = min(n, rank)."""
    if len(sample_ND) < 2:
        return np.zeros((0, sample_ND.shape[1])), np.zeros(0)
    centred = sample_ND - sample_ND.mean(0)
    _, s, vh = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    var = s**2
    k = int(min(n, (s > s[0] * 1e-9).sum())) if s[0] > 0 else 0
    return vh[:k], var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)


@torch.no_grad()
def component_directions(peft_model: nn.Module) -> list[tuple[int, str, np.ndarray]]:
    """Per component (table order): (layer whose residual it is compared at,
    read|write, unit-free residual-space direction [D]); layer -1: none."""
    base = peft_model.get_base_model()
    layers = base.get_decoder().layers
    out = []
    for info, layer in lora_modules(peft_model):
        (name,) = [a for a in layer.active_adapters if a in layer.lora_A]
        scaling = float(layer.scaling[name])
        for slot in range(layer.lora_A[name].weight.shape[0]):
            if info.module in WRITERS:
                vec = layer.lora_B[name].weight[:, slot].float() * scaling
                out.append((info.layer, "write", vec.cpu().numpy()))
                continue
            block = layers[info.layer]
            reads_input = info.module in INPUT_READERS
            norm = block.input_layernorm if reads_input else (
                block.post_attention_layernorm
            )  # fmt: skip
            vec = layer.lora_A[name].weight[slot].float() * norm.weight.float()
            site = info.layer - 1 if reads_input else info.layer
            out.append((site, "read", vec.cpu().numpy()))
    return out


def _abs_cos(vec_D: np.ndarray, dirs_KD: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vec_D)
    if norm == 0 or len(dirs_KD) == 0:
        return np.full(len(dirs_KD), np.nan)
    return np.abs(dirs_KD @ vec_D) / norm


def sae_strongest_writes(
    dir_GC: torch.Tensor, write_CD: torch.Tensor, layer_C: np.ndarray, n_layers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per SAE feature, the layer whose o/down components it writes most
    through and that write, (layer_G, write_GD); one layer at a time, so
    thousands of features x 64 layers x D never sit in memory together."""
    n = len(dir_GC)
    best_G = np.full(n, -1)
    norm_G = np.zeros(n)
    vec_GD = np.zeros((n, write_CD.shape[1]))
    for layer in range(n_layers):
        keep_C = torch.from_numpy(layer_C == layer)
        w_GD = (dir_GC[:, keep_C].double() @ write_CD[keep_C].double()).numpy()
        norms = np.linalg.norm(w_GD, axis=1)
        better = norms > norm_G
        best_G[better], norm_G[better], vec_GD[better] = (
            layer,
            norms[better],
            w_GD[better],
        )
    return best_G, vec_GD


def feature_cosines(
    pcs: list[tuple[np.ndarray, np.ndarray]],
    components: list[tuple[int, str, np.ndarray]],
    sae: tuple[list[int], np.ndarray, np.ndarray] | None = None,
) -> pl.DataFrame:
    """Long table: kind (lora|sae), key (component index | SAE latent),
    layer, direction (read|write), pc, explained (the pc's variance share at
    that layer), cosine (|cos| of the feature's direction and the pc).
    `sae`: (latents, layer_G, write_GD) from `sae_strongest_writes`."""
    rows = []

    def add(kind, key, layer, direction, vec_D):
        if layer < 0:
            return
        if layer >= len(pcs):
            return
        dirs_KD, explained_K = pcs[layer]
        for k, cos in enumerate(_abs_cos(vec_D, dirs_KD)):
            rows.append((kind, key, layer, direction, k, float(explained_K[k]),
                         float(cos)))  # fmt: skip

    for c, (layer, direction, vec_D) in enumerate(components):
        add("lora", c, layer, direction, vec_D)
    if sae is not None:
        for latent, layer, vec_D in zip(*sae, strict=True):
            add("sae", int(latent), int(layer), "write", vec_D)
    schema = {"kind": pl.Utf8, "key": pl.Int64, "layer": pl.Int64,
              "direction": pl.Utf8, "pc": pl.Int64, "explained": pl.Float64,
              "cosine": pl.Float64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row")
