"""Fig. 2: where the SAE's activation mass goes, by category and subcategory.

Used by rule `figure_sae_density` (workflow/rules/figures.smk). Input is
`autointerp/summary/sae_category_density.parquet`, one row per
(category, subcategory): `category, name, subcategory, density` where
density is the normalised summed activation (all rows sum to 1).

Drawn as a hierarchical bar chart: a bold bar per category, then its largest
subcategories indented below it (the rest pooled as "other"), so it stays
readable at one column's width even with many subcategories.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lorascope.figures.style import FigureStyle, add_footer, paper_rc, require_columns

__all__ = ["density_rows", "plot_sae_density"]

# Okabe-Ito without grey; categories beyond eight cycle.
CATEGORY_COLORS = [
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#F0E442",
    "#000000",
]


def density_rows(
    density: pl.DataFrame,
    max_subcategories: int,
    source: str = "sae_category_density.parquet",
) -> list[tuple[str, float, int, bool]]:
    """Rows to draw, top to bottom: (label, density, category index, is_header)."""
    require_columns(density, ["category", "name", "subcategory", "density"], source)
    if max_subcategories < 0:
        raise ValueError(f"max_subcategories must be >= 0, got {max_subcategories}")
    if (density["density"] < 0).any():
        raise ValueError(f"{source}: negative density values")
    total = float(density["density"].sum())
    if total <= 0:
        raise ValueError(f"{source}: densities sum to {total}; nothing to plot")
    d = density.with_columns(pl.col("density") / total)  # guard against drift
    cats = (
        d.group_by("category", "name")
        .agg(pl.col("density").sum())
        .sort(["density", "category"], descending=[True, False])
    )
    rows = []
    for ci, (cat, name, cat_density) in enumerate(cats.iter_rows()):
        rows.append((name, cat_density, ci, True))
        subs = d.filter(pl.col("category") == cat).sort(
            ["density", "subcategory"], descending=[True, False]
        )
        shown = subs.head(max_subcategories)
        for sub, val in shown.select("subcategory", "density").iter_rows():
            rows.append((sub, val, ci, False))
        rest = subs.slice(max_subcategories)
        if rest.height:
            rows.append(
                (f"other ({rest.height})", float(rest["density"].sum()), ci, False)
            )
    return rows


def plot_sae_density(
    density: pl.DataFrame,
    style: FigureStyle,
    footer: str,
    max_subcategories: int = 4,
    wrap: int = 34,
) -> plt.Figure:
    rows = density_rows(density, max_subcategories)
    n = len(rows)
    with paper_rc(style):
        fig, ax = plt.subplots(figsize=style.size(0.1 + 0.062 * n))
        y = np.arange(n)
        vals = np.array([r[1] for r in rows])
        colors = [CATEGORY_COLORS[r[2] % len(CATEGORY_COLORS)] for r in rows]
        alphas = [1.0 if r[3] else 0.45 for r in rows]
        for yi, v, c, a, r in zip(y, vals, colors, alphas, rows, strict=True):
            ax.barh(yi, v, 0.8 if r[3] else 0.62, color=c, alpha=a, linewidth=0)
            ax.text(
                v + 0.01 * vals.max(),
                yi,
                f"{100 * v:.1f}%",
                va="center",
                fontsize=style.font_size - (1.5 if r[3] else 2.5),
                fontweight="bold" if r[3] else "normal",
            )
        labels = [
            textwrap.shorten(r[0], wrap, placeholder="…")
            if r[3]
            else "   " + textwrap.shorten(r[0], wrap - 3, placeholder="…")
            for r in rows
        ]
        ax.set_yticks(y, labels)
        for tick, r in zip(ax.get_yticklabels(), rows, strict=True):
            if r[3]:
                tick.set_fontweight("bold")
            else:
                tick.set_fontsize(style.font_size - 2)
        ax.tick_params(axis="y", length=0)
        ax.set_ylim(n - 0.5, -0.6)  # top to bottom, no empty margin
        ax.set_xlim(0, vals.max() * 1.2)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.set_xlabel("share of SAE activation mass")
        add_footer(fig, footer, style)
    return fig
