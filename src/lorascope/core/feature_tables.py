"""Reading the feature tables (docs/ARCHITECTURE.md "Feature tables").

Used by every autointerp rule: checks that features.parquet and
contexts.parquet carry the columns the stage needs (naming the missing
column) and groups contexts per feature, strongest first. Contexts of the
random sample below the top-k (source `sample`) reach only the readers that
ask for them (the autointerp split); the others see the top-k as before.
"""

from __future__ import annotations

import polars as pl

__all__ = ["check_columns", "contexts_by_feature", "FEATURE_COLS", "CONTEXT_COLS"]

FEATURE_COLS = (
    "feature",
    "kind",
    "label",
    "mean",
    "n_contexts",
    "few_contexts",
    "population",
)
# contexts.parquet's `source` (lorascope.core.contexts.context_rows): top, a
# top-k token; sample, a random activating token below the top-k; both, a
# top-k token the random sample drew too.
SOURCES = ("top", "sample", "both")
CONTEXT_COLS = (
    "feature",
    "rank",
    "doc",
    "pos",
    "value",
    "tokens",
    "acts",
    "center",
    "source",
)


def check_columns(df: pl.DataFrame, needed, what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {df.columns}")


def contexts_by_feature(
    contexts: pl.DataFrame,
    n: int | None = None,
    what: str = "contexts.parquet",
    sample: bool = False,
) -> dict[int, list[dict]]:
    """feature -> its context rows (dicts) by rank, at most `n` of them: the
    top-k ones, and with `sample` the random sample's below them too."""
    check_columns(contexts, CONTEXT_COLS, what)
    bad = contexts.filter(~pl.col("source").is_in(SOURCES))
    if bad.height:
        raise ValueError(
            f"{what}: feature {bad['feature'][0]} rank {bad['rank'][0]} has "
            f"source {bad['source'][0]!r} (expected top, sample or both)"
        )
    if not sample:
        contexts = contexts.filter(pl.col("source") != "sample")
    out: dict[int, list[dict]] = {}
    for row in contexts.sort(["feature", "rank"]).iter_rows(named=True):
        rows = out.setdefault(int(row["feature"]), [])
        if n is None or len(rows) < n:
            c = int(row["center"])
            if not 0 <= c < len(row["tokens"]) or len(row["acts"]) != len(
                row["tokens"]
            ):
                raise ValueError(
                    f"{what}: feature {row['feature']} rank {row['rank']} has "
                    f"center {c}, {len(row['tokens'])} tokens, "
                    f"{len(row['acts'])} acts"
                )
            rows.append(row)
    return out
