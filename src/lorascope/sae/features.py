"""SAE features over the whole dataset, from the activation shards alone.

Used by the `sae_features` rule (workflow/rules/sae.smk). The saved SAE
encodes every token's vector of LoRA scalars straight from the shards, so no
language-model forward pass is needed. Dead latents (per `sae/metrics.json`)
are dropped; the alive ones are numbered 0..F-1 and written in the same
tables as the LoRA and MLP features (docs/ARCHITECTURE.md "Feature tables"):
`features.parquet`, `topk.parquet` (via `lorascope.core.topk.StreamingTopK`) and
`contexts.parquet` (via `lorascope.core.contexts`), so autointerp and dashboards
treat all three kinds alike. SAE codes are non-negative: polarity `pos`, and
only codes above `activations.min_activation` (default 0: the latent fired)
are top-k entries, so a latent that fired 3 times has 3 contexts. The same
pass streams each latent's random sample of firing tokens
(`lorascope.core.sample`, `activations.sample_k`), whose windows join the
top-k ones in contexts.parquet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import polars as pl
import torch

from lorascope.core.contexts import features_frame, population_text, sae_units
from lorascope.core.sample import StreamingSample
from lorascope.core.topk import FeatureStats, StreamingTopK

__all__ = [
    "POLARITY",
    "describe_population",
    "doc_values_fn",
    "encode_alive",
    "sae_feature_tables",
]

# SAE codes are non-negative: one feature per latent, ranked by its value.
POLARITY = "pos"


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
    min_activation: float = 0.0,
    sample_k: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    """(features, topk, sample) frames for the alive latents, one pass over
    the shards.

    topk holds, per feature, at most `k` codes above `min_activation`;
    sample (None if `sample_k` is 0) at most `sample_k` random ones above it
    (`StreamingSample.to_frame`).

    Holds one shard and one batch of codes at a time; the top-k state is
    `[F, k]`. `shards` is a `lorascope.core.shards.ShardSet`. Feature f is alive
    latent `alive_latents[f]` (its `latent` column, label `sae.{latent}`).
    """
    alive_F = _alive_tensor(alive_latents, sae.cfg.d_sae)
    device = sae.W_dec.device
    top = StreamingTopK(len(alive_F), k, device)
    stats = FeatureStats(len(alive_F), device)
    sample = StreamingSample(len(alive_F), sample_k, device) if sample_k else None
    for shard in shards.iter_shards():
        for rows in torch.arange(shard["acts"].shape[0]).split(batch_size):
            codes_TF = encode_alive(sae, shard["acts"][rows], alive_F, batch_size)
            top.update(codes_TF, shard["doc"][rows], shard["pos"][rows])
            stats.update(codes_TF)
            if sample is not None:
                sample.update(codes_TF, shard["doc"][rows], shard["pos"][rows])
    units = sae_units(sae.cfg.d_sae)[alive_F.tolist()]
    features = features_frame("sae", units, POLARITY, stats.to_frame())
    drawn = None if sample is None else sample.to_frame(min_activation)
    return features, top.to_frame(min_activation), drawn


def describe_population(n_alive: int, d_sae: int, act: dict) -> str:
    """One line naming the SAE feature population (see core.contexts)."""
    return population_text(f"alive SAE latents ({n_alive} of {d_sae})", act)


def doc_values_fn(
    sae: Any, shards: Any, alive_latents: Sequence[int]
) -> Callable[[list[int]], Iterator[tuple[int, torch.Tensor]]]:
    """`docs -> (doc, codes [T_doc, F])` of the alive latents, for
    `lorascope.core.contexts.build_contexts`: re-encodes each doc's LoRA scalars
    from the shards (reading each shard at most once)."""
    alive_F = _alive_tensor(alive_latents, sae.cfg.d_sae)

    def doc_values(docs: list[int]) -> Iterator[tuple[int, torch.Tensor]]:
        for doc, cols in shards.iter_docs(docs):
            yield doc, encode_alive(sae, cols["acts"], alive_F)

    return doc_values
