"""Feature tables: features.parquet and context windows around top-k tokens
and around a random sample of each feature's activating tokens.

Used by rules `lora_features` and `mlp_features` and by the
SAE feature rule; kind-agnostic: a kind supplies its units (one row per
measured scalar), its streamed statistics and top-k, and a function giving
unit activations over whole documents. Schemas: docs/ARCHITECTURE.md
("Feature tables").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import polars as pl
import torch

from lorascope.core.components import component_labels
from lorascope.core.topk import feature_units

__all__ = [
    "ContextError",
    "dominant_features",
    "finish_features",
    "population_text",
    "subset_features",
    "lora_units",
    "mlp_units",
    "sae_units",
    "features_frame",
    "build_contexts",
    "token_strings",
    "CONTEXT_SCHEMA",
    "context_rows",
]

CONTEXT_SCHEMA = {
    "feature": pl.Int64,
    "rank": pl.Int64,
    "doc": pl.Int64,
    "pos": pl.Int64,
    "value": pl.Float32,
    "tokens": pl.List(pl.String),
    "acts": pl.List(pl.Float32),
    "center": pl.Int32,
    "source": pl.String,  # feature_tables.SOURCES
}
_UNIT_COLUMNS = {
    "label": pl.String,
    "component": pl.Int64,
    "layer": pl.Int64,
    "module": pl.String,
    "neuron": pl.Int64,
    "latent": pl.Int64,
}


class ContextError(ValueError):
    """Recomputed activations disagree with the streamed top-k, or data is missing."""


def _units(rows: dict, n: int) -> pl.DataFrame:
    cols = {k: rows.get(k, [None] * n) for k in _UNIT_COLUMNS}
    return pl.DataFrame(cols, schema=_UNIT_COLUMNS)


def lora_units(components: pl.DataFrame) -> pl.DataFrame:
    """One unit per component row, labelled `L3.gate` (`L3.gate#1` if rank > 1)."""
    return _units(
        {
            "label": component_labels(components),
            "component": components["index"].to_list(),
            "layer": components["layer"].to_list(),
            "module": components["module"].to_list(),
        },
        components.height,
    )


def mlp_units(n_layers: int, n_neurons: int) -> pl.DataFrame:
    """Unit l * n_neurons + j = neuron j of layer l's MLP, labelled `L3.mlp.17`."""
    layer = np.repeat(np.arange(n_layers), n_neurons).tolist()
    neuron = np.tile(np.arange(n_neurons), n_layers).tolist()
    label = [f"L{a}.mlp.{b}" for a, b in zip(layer, neuron, strict=True)]
    rows = {"label": label, "layer": layer, "neuron": neuron}
    return _units(rows, len(label))


def sae_units(n_latents: int) -> pl.DataFrame:
    latent = list(range(n_latents))
    return _units({"label": [f"sae.{i}" for i in latent], "latent": latent}, n_latents)


def features_frame(
    kind: str, units: pl.DataFrame, polarity: str, stats: pl.DataFrame
) -> pl.DataFrame:
    """features.parquet: one row per (unit, sign) with its streamed statistics."""
    unit, sign = feature_units(units.height, polarity)
    if stats.height != len(unit):
        raise ContextError(
            f"{kind}: {stats.height} feature statistics for {len(unit)} features "
            f"({units.height} units, polarity {polarity})"
        )
    suffix = {1: "+", -1: "-", 0: ""} if polarity == "both" else {1: "", 0: ""}
    per_feature = units[unit.tolist()]
    labels = [
        lab + suffix[int(s)]
        for lab, s in zip(per_feature["label"], sign.tolist(), strict=True)
    ]
    return pl.DataFrame(
        {
            "feature": np.arange(len(unit), dtype=np.int64),
            "kind": [kind] * len(unit),
        }
    ).with_columns(
        pl.Series("label", labels, pl.String),
        *[per_feature[c] for c in ("component", "layer", "module", "neuron")],
        per_feature["latent"],
        pl.Series("sign", sign, pl.Int8),
        stats["max"].cast(pl.Float32),
        stats["mean"].cast(pl.Float32),
        stats["frac_active"].cast(pl.Float32),
    )


def dominant_features(features: pl.DataFrame) -> np.ndarray:
    """Polarity `dominant`: per unit of a `both` frame, the side that reaches the
    larger activation (feature 2u if max(a) >= max(-a), else 2u + 1; ties go to
    `+`, as the paper's public MLP code did). Returns the kept feature ids."""
    max_U2 = features.sort("feature")["max"].to_numpy().reshape(-1, 2)
    return 2 * np.arange(len(max_U2)) + (max_U2[:, 1] > max_U2[:, 0])


def subset_features(
    keep, features: pl.DataFrame, *tables: pl.DataFrame
) -> tuple[pl.DataFrame, ...]:
    """Keep features `keep` (ids, ascending) and renumber them 0..n-1 in
    `features` and in each table with a `feature` column (topk, contexts)."""
    keep = np.asarray(keep, dtype=np.int64)
    if len(keep) and np.any(np.diff(keep) <= 0):
        raise ValueError("subset_features: ids must be unique and ascending")
    new = pl.DataFrame({"feature": keep, "_new": np.arange(len(keep), dtype=np.int64)})

    def renumber(df: pl.DataFrame) -> pl.DataFrame:
        cols = df.columns
        out = df.join(new, on="feature", how="inner").with_columns(
            pl.col("_new").alias("feature")
        )
        return out.drop("_new").select(cols).sort("feature", maintain_order=True)

    return (renumber(features), *(renumber(t) for t in tables))


def finish_features(
    features: pl.DataFrame, topk: pl.DataFrame, min_contexts: int, population: str
) -> pl.DataFrame:
    """Add `n_contexts` (real top-k rows), `few_contexts` (fewer than
    `min_contexts`: left out of the autointerp shares) and `population`."""
    counts = topk.group_by("feature").agg(pl.len().cast(pl.Int32).alias("n"))
    return (
        features.join(counts, on="feature", how="left")
        .with_columns(
            pl.col("n").fill_null(0).cast(pl.Int32).alias("n_contexts"),
            (pl.col("n").fill_null(0) < min_contexts).alias("few_contexts"),
            pl.lit(population, pl.String).alias("population"),
        )
        .drop("n")
        .sort("feature")
    )


def population_text(what: str, act: Mapping) -> str:
    """`what` plus the filters every kind shares (`activations:` keys)."""
    text = (
        f"{what}; top {act['top_k']} with activation > {act['min_activation']:g}; "
        f"under {act['min_contexts']} contexts left out"
    )
    note = act.get("population_note")
    return f"{text} ({note})" if note else text


def token_strings(tokenizer) -> Callable[[Sequence[int]], list[str]]:
    """Per-token display strings (each id decoded on its own, once: a corpus
    has far fewer distinct ids than tokens)."""
    strings: dict[int, str] = {}

    def decode(ids: Sequence[int]) -> list[str]:
        out = []
        for t in ids:
            t = int(t)
            if t not in strings:
                strings[t] = tokenizer.decode([t])
            out.append(strings[t])
        return out

    return decode


def context_rows(topk: pl.DataFrame, sample: pl.DataFrame | None) -> pl.DataFrame:
    """feature, rank, doc, pos, value, source of every context to build.

    Top-k rows keep their rank (source `top`, or `both` if the sample drew
    the token too); sampled tokens outside the top-k follow them, ranked on
    by value (source `sample`). The top-k holds a feature's largest values,
    so rank order is strongest first over the union too."""
    top = topk.select(
        pl.col("feature", "rank", "doc", "pos").cast(pl.Int64),
        pl.col("value").cast(pl.Float32),
    )
    if sample is None or sample.height == 0:
        return top.with_columns(pl.lit("top").alias("source"))
    keys = ["feature", "doc", "pos"]
    sample = sample.select(
        pl.col(keys).cast(pl.Int64), pl.col("value").cast(pl.Float32)
    ).unique(keys)
    drawn = sample.select(keys).with_columns(pl.lit(True).alias("_drawn"))
    top = top.join(drawn, on=keys, how="left").select(
        *top.columns,
        pl.when(pl.col("_drawn")).then(pl.lit("both")).otherwise(pl.lit("top"))
        .alias("source"),
    )  # fmt: skip
    n_top = topk.group_by("feature").agg(pl.len().cast(pl.Int64).alias("_n"))
    below = (
        sample.join(top.select(keys), on=keys, how="anti")
        .sort(
            ["feature", "value", "doc", "pos"], descending=[False, True, False, False]
        )
        .join(n_top, on="feature", how="left")
        .with_columns(
            (pl.col("_n").fill_null(0) + pl.int_range(pl.len()).over("feature")).alias(
                "rank"
            ),
            pl.lit("sample").alias("source"),
        )
        .select(top.columns)
    )
    return pl.concat([top, below]).sort("feature", "rank")


def build_contexts(
    topk: pl.DataFrame,
    token_ids: Mapping[int, Sequence[int]],
    decode: Callable[[Sequence[int]], list[str]],
    doc_values: Callable[[list[int]], Iterable[tuple[int, torch.Tensor]]],
    polarity: str,
    width: int,
    rtol: float = 0.05,
    sample: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """contexts.parquet: `width` tokens either side of every top-k token and
    of every token of the random `sample` (feature, doc, pos, value; None =
    none), one row per token (`context_rows`: column `source`).

    `doc_values(docs)` yields `(doc, unit values [T_doc, U])` for the docs asked
    for (any order, each once); the window's `acts` are the feature's
    sign-adjusted activations. The value at the centre must match the streamed
    value (to `rtol` of the feature's scale): a recomputation that drifts
    (other weights, other text) raises instead of mislabelling examples.
    """
    rows_all = context_rows(topk, sample)
    if rows_all.height == 0:
        return pl.DataFrame(schema=CONTEXT_SCHEMA)
    by_doc = rows_all.sort("doc", "feature", "rank").partition_by("doc", as_dict=True)
    docs = sorted(int(k[0]) for k in by_doc)
    missing = [d for d in docs if d not in token_ids]
    if missing:
        raise ContextError(f"context docs {missing[:8]} not in the SFT table")
    scale = rows_all.group_by("feature").agg(pl.col("value").abs().max().alias("s"))
    scale = dict(scale.iter_rows())
    out = {k: [] for k in CONTEXT_SCHEMA}
    seen = set()
    for doc, values_TU in doc_values(docs):
        seen.add(int(doc))
        rows = by_doc[(int(doc),)]
        ids = token_ids[int(doc)]
        if values_TU.shape[0] != len(ids):
            raise ContextError(
                f"doc {doc}: {values_TU.shape[0]} activation rows for {len(ids)} tokens"
            )
        # Only this doc's features, not the whole signed view ([T, 2U] for MLPs).
        feats = np.unique(rows["feature"].to_numpy())
        col = {int(f): i for i, f in enumerate(feats)}
        unit_of, sign_of = feature_units(values_TU.shape[1], polarity)
        picked_Tn = values_TU.float()[:, torch.from_numpy(unit_of[feats])].numpy()
        if polarity == "abs":
            feats_Tn = np.abs(picked_Tn)
        else:  # both: sign -1 flips; pos: sign +1
            feats_Tn = picked_Tn * sign_of[feats].astype(np.float32)
        toks = decode(ids)
        for f, r, pos, value, source in rows.select(
            "feature", "rank", "pos", "value", "source"
        ).iter_rows():
            got = float(feats_Tn[pos, col[f]])
            if abs(got - value) > rtol * max(scale[f], 1e-6):
                what = "random-sample" if source == "sample" else "top-k"
                raise ContextError(
                    f"feature {f} doc {doc} pos {pos}: recomputed activation "
                    f"{got:.5g} != streamed {what} value {value:.5g}"
                )
            lo, hi = max(0, pos - width), min(len(ids), pos + width + 1)
            for key, v in (("feature", f), ("rank", r), ("doc", doc), ("pos", pos)):
                out[key].append(int(v))
            out["value"].append(value)
            out["tokens"].append(toks[lo:hi])
            out["acts"].append(feats_Tn[lo:hi, col[f]].tolist())
            out["center"].append(pos - lo)
            out["source"].append(source)
    if seen != set(docs):
        raise ContextError(f"no activations for docs {sorted(set(docs) - seen)[:8]}")
    return pl.DataFrame(out, schema=CONTEXT_SCHEMA).sort("feature", "rank")
