"""Fig. 1 (left): how often features are monosemantic, per feature kind.

Used by rule `figure_classes` (workflow/rules/figures.smk). Input is
`autointerp/summary/classes.parquet` as written by
`lorascope.autointerp.summary.class_shares`: one row per (kind,
classification) with `share, ci_low, ci_high` (percentile bootstrap over
features, 95%) and `n_ok` (features that got a class). `wilson_interval` is
kept here for figures whose producers give counts only (steering accuracy).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lorascope.core.labels import explainer_label
from lorascope.figures.style import (
    CLASS_NAMES,
    KIND_COLORS,
    KIND_SHORT,
    Figure,
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

__all__ = ["wilson_interval", "class_fractions", "plot_classes"]

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(n: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial fraction n/total (well-behaved at 0, 1)."""
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    if not 0 <= n <= total:
        raise ValueError(f"n must be in [0, total={total}], got {n}")
    p = n / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def class_fractions(
    classes: pl.DataFrame, kinds: list[str], source: str = "classes.parquet"
) -> pl.DataFrame:
    """`kind, class, n_ok, frac, lo, hi`, one row per (kind, class 0..2)."""
    require_columns(
        classes,
        ["kind", "classification", "n_ok", "share", "ci_low", "ci_high"],
        source,
    )
    out = []
    for kind in kinds:
        sub = classes.filter(pl.col("kind") == kind)
        if sub.height == 0:
            raise ValueError(
                f"{source}: no rows for kind {kind!r} (kinds present: "
                f"{sorted(classes['kind'].unique().to_list())})"
            )
        unknown = set(sub["classification"].to_list()) - set(CLASS_NAMES)
        if unknown:
            raise ValueError(f"{source}: kind {kind!r} has unknown class(es) {unknown}")
        if sub["share"].is_null().any():
            raise ValueError(f"{source}: kind {kind!r} has no classified feature")
        for row in sub.sort("classification").iter_rows(named=True):
            out.append(
                (
                    kind,
                    row["classification"],
                    row["n_ok"],
                    row["share"],
                    row["ci_low"],
                    row["ci_high"],
                )
            )
    return pl.DataFrame(
        out, schema=["kind", "class", "n_ok", "frac", "lo", "hi"], orient="row"
    )


def plot_classes(
    classes: pl.DataFrame, kinds: list[str], style: FigureStyle, footer: str
) -> plt.Figure:
    """Grouped bars: fraction of features per class, one bar per kind."""
    fr = class_fractions(classes, kinds)
    with paper_rc(style):
        fig, ax = plt.subplots(figsize=style.size(0.62))
        width = 0.8 / len(kinds)
        x = np.arange(len(CLASS_NAMES))
        for i, kind in enumerate(kinds):
            sub = fr.filter(pl.col("kind") == kind).sort("class")
            frac = sub["frac"].to_numpy()
            err = np.vstack([frac - sub["lo"].to_numpy(), sub["hi"].to_numpy() - frac])
            pos = x + (i - (len(kinds) - 1) / 2) * width
            ax.bar(
                pos,
                frac,
                width * 0.92,
                yerr=err,
                color=KIND_COLORS[kind],
                error_kw={"elinewidth": 0.7, "capsize": 1.5, "capthick": 0.7},
                label=f"{KIND_SHORT[kind]} (n={sub['n_ok'][0]})",
            )
            for xi, hi, f in zip(pos, sub["hi"].to_numpy(), frac, strict=True):
                ax.text(
                    xi,
                    hi + 0.015,
                    f"{100 * f:.0f}",
                    ha="center",
                    va="bottom",
                    fontsize=style.font_size - 2.5,
                )
        ax.set_xticks(x, list(CLASS_NAMES.values()))
        ax.set_ylabel("fraction of features")
        top = float(fr["hi"].max())
        ax.set_ylim(0, min(1.0, top + 0.12) if top < 0.88 else 1.05)
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.legend(
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=len(kinds),
            handlelength=1.0,
            columnspacing=1.0,
        )
        add_footer(fig, footer + "; 95% bootstrap intervals", style)
    return fig


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """Fig. 1 left from `autointerp/summary/classes.parquet` (rule figure_classes)."""
    footer = explainer_label(data["usage"])
    fig = plot_classes(data["classes"], list(options["kinds"]), style, footer)
    return Figure(fig, note=footer)
