"""Reading the feature tables (docs/ARCHITECTURE.md "Feature tables").

Used by every autointerp rule: checks that features.parquet and
contexts.parquet carry the columns the stage needs (naming the missing
column) and groups contexts per feature, strongest first.
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
CONTEXT_COLS = ("feature", "rank", "doc", "pos", "value", "tokens", "acts", "center")


def check_columns(df: pl.DataFrame, needed, what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {df.columns}")


def contexts_by_feature(
    contexts: pl.DataFrame, n: int | None = None, what: str = "contexts.parquet"
) -> dict[int, list[dict]]:
    """feature -> its context rows (dicts) by rank, at most `n` of them."""
    check_columns(contexts, CONTEXT_COLS, what)
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
