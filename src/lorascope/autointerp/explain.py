"""Explanations and monosemanticity classes per feature (rule autointerp_explain).

`explain_kind(features, contexts, section, run, cache_path, kind)` returns one
row per feature of features.parquet (none is dropped) and the usage rows:

    feature:i64, kind, label, explanation:str?, classification:i8? (0 specific,
    1 broad but every example fits, 2 polysemantic), reasoning:str?,
    status ("ok" | "failed" | "no_contexts" | "few_contexts"), error:str?,
    raw:str? (the reply), n_contexts:i32 (contexts shown), explainer
    ("offline" or "provider:model"), population (from features.parquet)

A feature marked `few_contexts` in features.parquet (fewer real top-k
contexts than activations.min_contexts) is not explained: status
`few_contexts`, left out of the shares and counted. The examples shown follow
`select_examples` (count, window, per-document cap, shuffle; per kind via
autointerp.kind_overrides), whichever provider (`providers.PROVIDERS`) answers,
taken from the feature's explain split only (`split.py`: the contexts held out
for scoring are never shown).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.autointerp.providers import provider_for
from lorascope.autointerp.settings import kind_section, llm_settings
from lorascope.autointerp.split import explain_pool, split_contexts
from lorascope.core.feature_tables import (
    FEATURE_COLS,
    check_columns,
    contexts_by_feature,
)

__all__ = [
    "EXCLUDED",
    "EXPLANATION_SCHEMA",
    "explain_kind",
    "select_examples",
    "trim_window",
]

# Statuses of features left out of every share (counted as n_excluded).
EXCLUDED = ("no_contexts", "few_contexts")

EXPLANATION_SCHEMA = {
    "feature": pl.Int64,
    "kind": pl.String,
    "label": pl.String,
    "explanation": pl.String,
    "classification": pl.Int8,
    "reasoning": pl.String,
    "status": pl.String,
    "error": pl.String,
    "raw": pl.String,
    "n_contexts": pl.Int32,
    "explainer": pl.String,
    "population": pl.String,
}


def trim_window(ctx: dict, window: int | None) -> dict:
    """The context cut to `window` tokens either side of its centre."""
    c = int(ctx["center"])
    if window is None or (c <= window and len(ctx["tokens"]) - c - 1 <= window):
        return ctx
    lo, hi = max(0, c - window), c + window + 1
    return {
        **ctx,
        "tokens": list(ctx["tokens"])[lo:hi],
        "acts": list(ctx["acts"])[lo:hi],
        "center": c - lo,
    }


def select_examples(ctxs: list[dict], cfg: dict, seed: int, fid: int) -> list[dict]:
    """The contexts one feature's explainer sees, from its contexts by rank.

    At most `max_examples_per_doc` per document (strongest kept), then the
    first `n_contexts`, shuffled (seeded per feature) if `shuffle_examples`,
    each cut to `example_window` tokens either side (null = as stored). The
    public code: top 10, shuffled, +/-8 for LoRA/MLP; at most 4 per rollout,
    top 12, +/-16 for SAE features.
    """
    per_doc = cfg.get("max_examples_per_doc")
    if per_doc is not None:
        seen: dict[int, int] = {}
        kept = []
        for c in ctxs:
            seen[c["doc"]] = seen.get(c["doc"], 0) + 1
            if seen[c["doc"]] <= per_doc:
                kept.append(c)
        ctxs = kept
    ctxs = ctxs[: cfg["n_contexts"]]
    if cfg.get("shuffle_examples"):
        order = np.random.default_rng([seed, fid]).permutation(len(ctxs))
        ctxs = [ctxs[i] for i in order]
    return [trim_window(c, cfg.get("example_window")) for c in ctxs]


def explain_kind(
    features: pl.DataFrame,
    contexts: pl.DataFrame,
    section: dict,
    run: str,
    cache_path,
    kind: str,
) -> tuple[pl.DataFrame, list[dict]]:
    check_columns(features, FEATURE_COLS, f"features/{kind}/features.parquet")
    section = kind_section(section, kind)
    explainer = provider_for(llm_settings(section, run), section, cache_path)
    by_feature = contexts_by_feature(
        contexts, None, f"features/{kind}/contexts.parquet", sample=True
    )
    rows, items = {}, []
    for f in features.sort("feature").iter_rows(named=True):
        fid = int(f["feature"])
        seed = section["seed"]
        own = split_contexts(by_feature.get(fid, []), section["split"], seed, fid)[0]
        own = explain_pool(own, section, seed, fid)
        ctxs = select_examples(own, section, seed, fid)
        row = dict.fromkeys(EXPLANATION_SCHEMA)
        row.update(
            feature=fid,
            kind=kind,
            label=f["label"],
            n_contexts=len(ctxs),
            explainer=explainer.label,
            status="ok",
            population=f["population"],
        )
        rows[fid] = row
        if f["few_contexts"] and ctxs:
            row.update(
                status="few_contexts",
                n_contexts=0,
                error=f"{f['n_contexts']} real contexts, fewer than "
                "activations.min_contexts",
            )
        elif not ctxs:
            row.update(status="no_contexts", error="feature has no contexts")
        else:
            items.append((fid, ctxs))
    outcomes, usage = explainer.explain(f"explain_{kind}", items)
    for fid, out in outcomes.items():
        rows[fid].update(status=out.status, error=out.error, raw=out.raw)
        if out.value is not None:
            rows[fid].update(out.value)
    return pl.DataFrame(list(rows.values()), schema=EXPLANATION_SCHEMA), usage
