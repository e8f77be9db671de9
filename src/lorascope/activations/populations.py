"""Which features the LoRA and MLP tables hold (rules `lora_features`, `mlp_features`).

The extraction pass streams top-k and statistics for every LoRA component and
every recorded MLP neuron, with the streamed polarity (`dominant` is streamed
as `both`). The feature tables then keep a population of them:

- LoRA: the components of `activations.lora_modules` (all seven by default;
  the paper's public top-k script defaulted to gate/up/down);
- polarity `dominant`: per unit, the side reaching the larger activation
  (what the public MLP script kept), else every streamed feature;
- only real activations: top-k entries (and random-sample entries,
  `activations.sample_k`) above `activations.min_activation`;
  a feature with fewer than `activations.min_contexts` of them is marked
  `few_contexts` and left out of the autointerp shares (with a count).

Kept features are renumbered 0..F-1 in features, topk and contexts alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import polars as pl
import torch

from lorascope.core.contexts import (
    build_contexts,
    dominant_features,
    features_frame,
    finish_features,
    population_text,
    subset_features,
)
from lorascope.core.sample import StreamingSample
from lorascope.core.topk import FeatureStats, StreamingTopK, stream_polarity

__all__ = ["select_population", "describe_population", "build_feature_tables"]

MODULES = ("q", "k", "v", "o", "gate", "up", "down")


def select_population(
    features: pl.DataFrame, polarity: str, modules: Sequence[str] | None = None
) -> np.ndarray:
    """Ids (ascending) of the streamed features a population keeps."""
    features = features.sort("feature")
    keep = np.ones(features.height, dtype=bool)
    if modules is not None:
        unknown = sorted(set(modules) - set(MODULES))
        if unknown:
            raise ValueError(f"activations.lora_modules: unknown module(s) {unknown}")
        keep &= features["module"].is_in(list(modules)).fill_null(False).to_numpy()
    if polarity == "dominant":
        dominant = np.zeros(features.height, dtype=bool)
        dominant[dominant_features(features)] = True
        keep &= dominant
    return np.flatnonzero(keep)


def describe_population(kind: str, meta: Mapping, act: Mapping) -> str:
    """One line naming what a kind's features are, for tables and figures."""
    if kind == "lora":
        modules = act.get("lora_modules") or list(MODULES)
        what = (
            f"LoRA scalars of {','.join(modules)} in every layer, "
            f"polarity {meta['polarity']}"
        )
    else:
        lora = "on" if meta.get("mlp_lora") else "off"
        what = (
            f"MLP {meta['mlp_tensor']} units 0-{meta['mlp_neurons_per_layer'] - 1} "
            f"of each of {meta['mlp_layers']} layers, LoRA {lora}, "
            f"polarity {meta.get('mlp_polarity', meta['polarity'])}"
        )
    return population_text(what, act)


def build_feature_tables(
    kind: str,
    units: pl.DataFrame,
    top: StreamingTopK,
    stats: FeatureStats,
    polarity: str,
    act: Mapping,
    token_ids: Callable[[Iterable[int]], Mapping[int, Sequence[int]]],
    decode: Callable[[Sequence[int]], list[str]],
    doc_values: Callable[[list[int]], Iterable[tuple[int, torch.Tensor]]],
    population: str,
    sample: StreamingSample | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(features, topk, contexts) of one kind's population.

    `top`/`stats`/`sample` are the merged streamed states (streamed with
    `stream_polarity(polarity)`; `sample` None = no random sample);
    `token_ids(docs)` gives the token ids of the docs that hold kept top-k or
    sampled tokens. Contexts are built only for kept features, so the
    recomputation (MLP) touches only their documents.
    """
    if act["min_contexts"] > top.k:
        raise ValueError(
            f"activations.min_contexts={act['min_contexts']} exceeds "
            f"activations.top_k={top.k}: every feature would be left out"
        )
    streamed = stream_polarity(polarity)
    features = features_frame(kind, units, streamed, stats.to_frame())
    modules = act.get("lora_modules") if kind == "lora" else None
    keep = select_population(features, polarity, modules)
    topk = top.to_frame(act["min_activation"])
    topk = topk.filter(pl.col("feature").is_in(keep.tolist()))
    drawn = None
    if sample is not None:
        drawn = sample.to_frame(act["min_activation"])
        drawn = drawn.filter(pl.col("feature").is_in(keep.tolist()))
    docs = pl.concat([topk["doc"], *([drawn["doc"]] if drawn is not None else [])])
    contexts = build_contexts(
        topk,
        token_ids(docs.unique().to_list()),
        decode,
        doc_values,
        streamed,
        act["context_width"],
        sample=drawn,
    )
    features, topk, contexts = subset_features(keep, features, topk, contexts)
    features = finish_features(features, topk, act["min_contexts"], population)
    return features, topk, contexts
