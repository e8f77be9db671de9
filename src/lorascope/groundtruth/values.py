"""Every feature's activation on every ground-truth token.

Used by rule `ground_truth`. One pass of the rank-1 model over the token set
with the extraction hooks (`lorascope.activations.hooks`): LoRA scalars and
the MLP-neuron baseline as the activations stage records them (the shards'
manifest says which neurons and tensor), SAE codes by encoding the scalars
with the saved SAE. Then each feature table's rows become columns: a
feature's value is its unit's activation times its sign (|a| for sign 0),
as in the feature tables, so larger = stronger for every kind.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from lorascope.activations.hooks import (
    LoraCapture,
    MlpCapture,
    forward_batch,
    make_batches,
    pad_batch,
)

__all__ = ["unit_values", "feature_values"]


@torch.no_grad()
def unit_values(
    model, seqs: list[list[int]], meta: dict, sae, batch_tokens: int, device
) -> dict[str, np.ndarray]:
    """{"lora": [T, C], "mlp": [T, U] (if the baseline exists), "sae": [T, L]}
    over the tokens of ``seqs`` in order."""
    lengths = [len(s) for s in seqs]
    offsets = np.cumsum([0, *lengths])
    lora = LoraCapture(model)
    n_mlp = meta.get("mlp_neurons_per_layer") or 0
    mlp = (
        MlpCapture(model, n_mlp, meta["mlp_tensor"], meta["mlp_lora"])
        if n_mlp
        else None
    )
    out = {"lora": np.zeros((offsets[-1], lora.n_components), np.float32)}
    if mlp is not None:
        out["mlp"] = np.zeros((offsets[-1], mlp.n_units), np.float32)
    try:
        for batch in make_batches(lengths, batch_tokens):
            ids, mask = pad_batch([seqs[j] for j in batch], device)
            lora_TC, mlp_TU = forward_batch(model, ids, mask, lora, mlp)
            dest = np.concatenate(
                [np.arange(offsets[j], offsets[j + 1]) for j in batch]
            )
            out["lora"][dest] = lora_TC.float().cpu().numpy()
            if mlp is not None:
                out["mlp"][dest] = mlp_TU.float().cpu().numpy()
    finally:
        lora.remove()
        if mlp is not None:
            mlp.remove()
    if sae is not None:
        codes = [
            sae.encode(torch.as_tensor(chunk, device=sae.W_dec.device)).cpu().numpy()
            for chunk in np.array_split(out["lora"], max(1, len(out["lora"]) // 8192))
        ]
        out["sae"] = np.concatenate(codes).astype(np.float32)
    return out


def feature_values(
    kind: str, units_TU: np.ndarray, features: pl.DataFrame, n_neurons: int = 0
) -> np.ndarray:
    """[T, F] values of a kind's feature-table rows (sign-adjusted)."""
    if kind == "lora":
        unit = features["component"].to_numpy()
    elif kind == "mlp":
        unit = features["layer"].to_numpy() * n_neurons + features["neuron"].to_numpy()
    elif kind == "sae":
        unit = features["latent"].to_numpy()
    else:
        raise ValueError(f"unknown feature kind {kind!r}")
    sign = features["sign"].to_numpy().astype(np.float32)
    # np.take gives a C-ordered copy (fancy indexing on columns a Fortran-
    # ordered one, slow to work on); then values times sign, and |values|
    # where the sign is 0, as np.where(sign == 0, |v|, v * sign) would.
    unsigned = sign == 0
    vals = np.take(units_TU, unit, axis=1)
    vals = vals.astype(np.result_type(vals.dtype, np.float32), copy=False)
    vals *= np.where(unsigned, 1, sign)
    vals[:, unsigned] = np.abs(vals[:, unsigned])
    return vals
