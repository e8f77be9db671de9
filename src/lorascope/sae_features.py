"""SAE features over the whole dataset, from the activation shards alone.

Used by the `sae_features` rule (workflow/rules/sae.smk). The saved SAE
encodes every token's vector of LoRA scalars straight from the shards, so no
language-model forward pass is needed. Dead latents (per `sae/metrics.json`)
are dropped; the alive ones are numbered 0..F-1 and written in the same
tables as the LoRA and MLP features (docs/ARCHITECTURE.md "Feature tables"):
`features.parquet`, `topk.parquet` (via `lorascope.topk.StreamingTopK`) and
`contexts.parquet`. SAE latents are non-negative, so polarity is `pos`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl
import torch

from lorascope.topk import FeatureStats, StreamingTopK

__all__ = [
    "encode_alive",
    "sae_feature_tables",
    "features_frame",
    "doc_activations_fn",
]


@torch.no_grad()
def encode_alive(
    sae: Any, acts_TC: torch.Tensor, alive_F: torch.Tensor, batch_size: int = 4096
) -> torch.Tensor:
    """SAE codes `[T, F]` of the alive latents for LoRA scalars `[T, C]`."""
    device = sae.W_dec.device
    if acts_TC.shape[1] != sae.cfg.d_in:
        raise ValueError(
            f"activations have {acts_TC.shape[1]} components but the SAE was "
            f"trained on {sae.cfg.d_in}; retrain it on these shards"
        )
    alive_F = alive_F.to(device)
    parts = [
        sae.encode(chunk.to(device, torch.float32))[:, alive_F].cpu()
        for chunk in acts_TC.split(batch_size)
    ]
    if not parts:
        return torch.zeros(0, len(alive_F))
    return torch.cat(parts)


def _alive_tensor(alive_latents: Sequence[int], d_sae: int) -> torch.Tensor:
    alive_F = torch.as_tensor(list(alive_latents), dtype=torch.int64)
    if len(alive_F) == 0:
        raise ValueError("every SAE latent is dead (sae/metrics.json alive_latents)")
    if int(alive_F.min()) < 0 or int(alive_F.max()) >= d_sae:
        raise ValueError(f"alive_latents out of range for d_sae={d_sae}")
    return alive_F


def sae_feature_tables(
    sae: Any,
    shards: Any,
    alive_latents: Sequence[int],
    k: int,
    batch_size: int = 4096,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(features, topk) frames for the alive latents, one pass over the shards.

    Holds one shard and one batch of codes at a time; the top-k state is
    `[F, k]`. `shards` is a `lorascope.shards.ShardSet`.
    """
    alive_F = _alive_tensor(alive_latents, sae.cfg.d_sae)
    device = sae.W_dec.device
    top = StreamingTopK(len(alive_F), k, device)
    stats = FeatureStats(len(alive_F), device)
    for shard in shards.iter_shards():
        for rows in torch.arange(shard["acts"].shape[0]).split(batch_size):
            codes_TF = encode_alive(sae, shard["acts"][rows], alive_F, batch_size)
            top.update(codes_TF, shard["doc"][rows], shard["pos"][rows])
            stats.update(codes_TF)
    return features_frame(stats.to_frame(), alive_F), top.to_frame()


def features_frame(stats: pl.DataFrame, alive_F: torch.Tensor) -> pl.DataFrame:
    """features.parquet rows for SAE latents, in the shared column order."""
    latent = alive_F.numpy()
    n = len(latent)
    return pl.DataFrame(
        {
            "feature": stats["feature"],
            "kind": ["sae"] * n,
            "label": [f"sae.{int(u)}" for u in latent],
            "component": pl.Series([None] * n, dtype=pl.Int64),
            "layer": pl.Series([None] * n, dtype=pl.Int64),
            "module": pl.Series([None] * n, dtype=pl.String),
            "neuron": pl.Series([None] * n, dtype=pl.Int64),
            "latent": pl.Series(latent, dtype=pl.Int64),
            "sign": pl.Series([1] * n, dtype=pl.Int8),
            "max": stats["max"],
            "mean": stats["mean"],
            "frac_active": stats["frac_active"],
        }
    )


def doc_activations_fn(
    sae: Any, doc_acts: Callable[[int], torch.Tensor], alive_latents: Sequence[int]
) -> Callable[[int, int], torch.Tensor]:
    """`(feature, doc) -> [n_tokens]` codes of one alive latent over one doc.

    `doc_acts(doc)` gives that doc's LoRA scalars `[n_tokens, C]` in position
    order (e.g. from `ShardSet.iter_docs`). Codes of a doc are cached, since
    contexts ask for many features of the same doc.
    """
    alive_F = _alive_tensor(alive_latents, sae.cfg.d_sae)
    cache: dict[int, torch.Tensor] = {}

    def fn(feature: int, doc: int) -> torch.Tensor:
        if doc not in cache:
            cache.clear()  # contexts come grouped by doc; keep one doc's codes
            cache[doc] = encode_alive(sae, doc_acts(doc), alive_F)
        return cache[doc][:, feature]

    return fn
