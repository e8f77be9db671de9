"""Shares and curves from the persistence rows (rules `sweep_persistence`,
`sweep_emergence`).

- `labels_frame`: the reference's category (autointerp/assignments) and
  monosemanticity class (autointerp/explanations) per feature; a feature
  the autointerp left unlabelled (failed, too few contexts) keeps a null
  and is counted under "(unlabelled)", never dropped.
- `persistence_shares`: per other member and kind, the share of the
  reference's features that persist, overall, by category and by class,
  with counts and a 95% Wilson interval (features taken as independent
  draws: a reading aid, not a claim about the population).
- `emergence`: for the checkpoints of the reference's own (rank, seed), the
  share matched at each step (overall and by category) and, per feature,
  the first step at which its match reaches the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from lorascope.core.io import to_markdown
from lorascope.sweeps.members import Member, SweepError

__all__ = [
    "CLASS_NAMES",
    "UNLABELLED",
    "emergence",
    "labels_frame",
    "persistence_markdown",
    "persistence_shares",
    "wilson",
]

UNLABELLED = "(unlabelled)"
CLASS_NAMES = {0: "monosemantic", 1: "broad but consistent", 2: "polysemantic"}


def labels_frame(assignments: pl.DataFrame, explanations: pl.DataFrame) -> pl.DataFrame:
    """`feature, category, subcategory, classification` (nulls where the
    autointerp gave none)."""
    ok = pl.col("status") == "ok"
    cats = assignments.select(
        "feature",
        category=pl.when(ok).then(pl.col("category")),
        subcategory=pl.when(ok).then(pl.col("subcategory")),
    )
    cls = explanations.select(
        "feature", classification=pl.when(ok).then(pl.col("classification"))
    )
    return cats.join(cls, on="feature", how="full", coalesce=True).with_columns(
        pl.col("classification").cast(pl.Int64)
    )


def wilson(
    k: np.ndarray, n: np.ndarray, z: float = 1.96
) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of k successes in n (NaN where n is 0)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z**2 / n
        mid = (p + z**2 / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    # Exactly 0 (k = 0) and 1 (k = n) in exact arithmetic; rounding gave -1e-17.
    return np.clip(mid - half, 0, 1), np.clip(mid + half, 0, 1)


def _group_column(by: str) -> pl.Expr:
    if by == "all":
        return pl.lit("all")
    if by == "category":
        return pl.col("category").fill_null(UNLABELLED)
    return (
        pl.col("classification")
        .replace_strict(CLASS_NAMES, default=None, return_dtype=pl.String)
        .fill_null(UNLABELLED)
    )


def _shares(rows: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    parts = []
    for by in ("all", "category", "class"):
        parts.append(
            rows.with_columns(by=pl.lit(by), group=_group_column(by))
            .group_by(*keys, "by", "group", maintain_order=True)
            .agg(n=pl.len(), n_matched=pl.col("matched").sum())
        )
    out = pl.concat(parts).with_columns(
        pl.col("n").cast(pl.Int64), pl.col("n_matched").cast(pl.Int64)
    )
    lo, hi = wilson(out["n_matched"].to_numpy(), out["n"].to_numpy())
    return out.with_columns(
        share=pl.col("n_matched") / pl.col("n"),
        share_lo=pl.Series(lo),
        share_hi=pl.Series(hi),
    )


def persistence_shares(rows: pl.DataFrame) -> pl.DataFrame:
    """`member, rank, seed, step, kind, by (all|category|class), group, n,
    n_matched, share, share_lo, share_hi`."""
    return _shares(rows, ["member", "rank", "seed", "step", "kind"]).sort(
        "kind", "rank", "seed", "step", "member", "by", "group", nulls_last=True
    )


def persistence_markdown(
    shares: pl.DataFrame, reference: Member, threshold: float
) -> str:
    parts = [
        f"# Features that persist: the reference member {reference.tag!r} "
        f"(rank {reference.rank}, seed {reference.seed}) against every other member\n",
        f"A reference feature persists in a member when its one-to-one partner "
        f"(Hungarian matching on |activation correlation| over the same SFT "
        f"tokens) reaches |r| >= {threshold}. Cells: share [95% Wilson interval] "
        "(matched / features). At |r| = 0.7 (the default) the partner explains "
        "about half the feature's variance on these tokens (r^2 = 0.49). "
        "persistence.parquet has every feature's partner, "
        "its correlation, the rotation-invariant correlation with the partner "
        "module's slots (LoRA, `r_subspace`) and decoder cosines where the "
        "spaces align.\n",
    ]
    for kind in shares["kind"].unique(maintain_order=True):
        sub = shares.filter(pl.col("kind") == kind)
        for by in ("all", "category", "class"):
            part = sub.filter(pl.col("by") == by)
            cell = [
                f"{r['share']:.2f} [{r['share_lo']:.2f}, {r['share_hi']:.2f}] "
                f"({r['n_matched']}/{r['n']})"
                for r in part.iter_rows(named=True)
            ]
            wide = part.with_columns(cell=pl.Series(cell)).pivot(
                "group", index=["member", "rank", "seed", "step"], values="cell"
            )
            parts.append(
                f"## {kind}: {'overall' if by == 'all' else 'by ' + by}\n\n"
                + to_markdown(wide)
            )
    return "\n".join(parts)


def emergence(
    rows: pl.DataFrame, members: Sequence[Member], reference: Member
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(curve, first steps) over the checkpoints of the reference's (rank, seed).

    curve: `kind, step, by (all|category), group, n, n_matched, share,
    share_lo, share_hi, threshold`. first steps: `kind, feature, label, category,
    classification, first_step` (null: below the threshold at every
    checkpoint), `stays` (matched at every checkpoint from it on).
    """
    steps = sorted(
        m.step
        for m in members
        if m.step is not None and m.rank == reference.rank and m.seed == reference.seed
    )
    if not steps:
        raise SweepError(
            f"sweep emergence: no checkpoint member of the reference's rank "
            f"{reference.rank} and seed {reference.seed} (a member with a step)"
        )
    tags = {
        m.tag
        for m in members
        if m.step is not None and m.rank == reference.rank and m.seed == reference.seed
    }
    ckpt = rows.filter(pl.col("member").is_in(list(tags)))
    missing = tags - set(ckpt["member"].unique().to_list())
    if missing:
        raise SweepError(
            f"sweep emergence: persistence has no rows for {sorted(missing)}"
        )
    curve = _shares(ckpt, ["kind", "step"]).filter(pl.col("by") != "class")
    threshold = (
        rows["threshold"].unique().to_list() if "threshold" in rows.columns else [None]
    )  # noqa: E501
    curve = curve.sort("kind", "by", "group", "step").with_columns(
        threshold=pl.lit(threshold[0] if len(threshold) == 1 else None, pl.Float64)
    )
    first = (
        ckpt.sort("step")
        .group_by("kind", "feature", maintain_order=True)
        .agg(
            pl.col("label").first(),
            pl.col("category").first(),
            pl.col("classification").first(),
            first_step=pl.col("step").filter(pl.col("matched")).first(),
            _matched=pl.col("matched"),
            _steps=pl.col("step"),
        )
    )
    stays = [
        fs is not None and all(mt for mt, st in zip(m, s, strict=True) if st >= fs)
        for fs, m, s in first.select("first_step", "_matched", "_steps").iter_rows()
    ]
    first = first.drop("_matched", "_steps").with_columns(stays=pl.Series(stays))
    return curve, first.sort("kind", "feature")
