"""Fig. 2: where the SAE's activation mass goes, by category and subcategory.

Used by rule `figure_sae_density` (workflow/rules/figures.smk). Inputs:
`autointerp/summary/sae_category_density.parquet` as written by
`lorascope.autointerp.summary.sae_category_density` (rows with `level`
"category" or "subcategory", `category, subcategory, density`: normalised
summed activation) and `autointerp/categories.json` for readable names.

Drawn as a hierarchical bar chart: a bold bar per category, then its largest
subcategories indented below it (the rest pooled as "other"), so it stays
readable at one column's width even with many subcategories.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lorascope.core.labels import explainer_label
from lorascope.figures.categories import category_names
from lorascope.figures.style import (
    Figure,
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

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


def subcategory_names(categories: dict) -> dict[tuple[str, str], str]:
    """(category, subcategory) string_ids -> subcategory name, from categories.json."""
    return {
        (c["string_id"], sc["string_id"]): sc.get("name") or sc["string_id"]
        for c in categories.get("categories", [])
        for sc in c.get("subcategories") or []
    }


def density_rows(
    density: pl.DataFrame,
    names: dict[str, str],
    sub_names: dict[tuple[str, str], str],
    max_subcategories: int,
    source: str = "sae_category_density.parquet",
) -> list[tuple[str, float, int, bool]]:
    """Rows to draw, top to bottom: (label, density, category index, is_header)."""
    require_columns(density, ["level", "category", "subcategory", "density"], source)
    if max_subcategories < 0:
        raise ValueError(f"max_subcategories must be >= 0, got {max_subcategories}")
    if (density["density"] < 0).any():
        raise ValueError(f"{source}: negative density values")
    cats = density.filter(pl.col("level") == "category").sort(
        ["density", "category"], descending=[True, False]
    )
    subs_all = density.filter(pl.col("level") == "subcategory")
    if cats.height == 0:
        raise ValueError(f"{source}: no rows with level 'category'")
    rows = []
    for ci, (cat, cat_density) in enumerate(
        cats.select("category", "density").iter_rows()
    ):
        rows.append((names.get(cat, cat), cat_density, ci, True))
        subs = subs_all.filter(pl.col("category") == cat).sort(
            ["density", "subcategory"], descending=[True, False], nulls_last=True
        )
        for sub, val in (
            subs.head(max_subcategories).select("subcategory", "density").iter_rows()
        ):
            label = "(none)" if sub is None else sub_names.get((cat, sub), sub)
            rows.append((label, val, ci, False))
        rest = subs.slice(max_subcategories)
        if rest.height:
            rows.append(
                (f"other ({rest.height})", float(rest["density"].sum()), ci, False)
            )
    return rows


def plot_sae_density(
    density: pl.DataFrame,
    names: dict[str, str],
    sub_names: dict[tuple[str, str], str],
    style: FigureStyle,
    footer: str,
    max_subcategories: int = 4,
    wrap: int = 34,
) -> plt.Figure:
    rows = density_rows(density, names, sub_names, max_subcategories)
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


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """Fig. 2 from the SAE category density (rule figure_sae_density)."""
    cats = data["categories"]
    footer = explainer_label(data["usage"])
    fig = plot_sae_density(
        data["density"],
        category_names(cats),
        subcategory_names(cats),
        style,
        footer,
        max_subcategories=options["sae_density"]["max_subcategories"],
    )
    return Figure(fig, note=footer)
