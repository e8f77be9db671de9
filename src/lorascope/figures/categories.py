"""Fig. 1 (right): which categories LoRA directions fall into, against MLP neurons.

Used by rule `figure_categories` (workflow/rules/figures.smk). Input is
`autointerp/summary/category_shares.parquet`, one row per (kind, category):
`kind, category, name, n, share`. Enrichment (LoRA share / MLP share) is
computed here; categories are sorted by it so the reasoning-specific ones
come first, as in the paper.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lorascope.figures.style import (
    KIND_COLORS,
    KIND_NAMES,
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

__all__ = ["enrichment_table", "plot_categories"]


def enrichment_table(
    shares: pl.DataFrame,
    focus: str = "lora",
    baseline: str = "mlp",
    source: str = "category_shares.parquet",
) -> pl.DataFrame:
    """One row per category: `category, name, share_{focus}, share_{baseline},
    enrichment` (null when the baseline share is 0), sorted by enrichment."""
    require_columns(shares, ["kind", "category", "name", "share"], source)
    for kind in (focus, baseline):
        if shares.filter(pl.col("kind") == kind).height == 0:
            raise ValueError(f"{source}: no rows for kind {kind!r}")
    wide = (
        shares.filter(pl.col("kind").is_in([focus, baseline]))
        .pivot(on="kind", index=["category", "name"], values="share")
        .fill_null(0.0)
        .rename({focus: f"share_{focus}", baseline: f"share_{baseline}"})
    )
    base = pl.col(f"share_{baseline}")
    return wide.with_columns(
        enrichment=pl.when(base > 0).then(pl.col(f"share_{focus}") / base)
    ).sort(
        [pl.col("enrichment").is_null(), "enrichment", f"share_{focus}"],
        descending=[True, True, True],
    )


def _enrichment_text(value: float | None) -> str:
    return "only LoRA" if value is None else f"{value:.1f}×"


def plot_categories(
    shares: pl.DataFrame, style: FigureStyle, footer: str, wrap: int = 26
) -> plt.Figure:
    """Horizontal paired bars of category shares with the enrichment printed."""
    tab = enrichment_table(shares)
    n = tab.height
    with paper_rc(style):
        fig, ax = plt.subplots(figsize=style.size(0.16 + 0.085 * n))
        y = np.arange(n)
        h = 0.4
        for off, kind in ((-h / 2, "lora"), (h / 2, "mlp")):
            ax.barh(
                y + off,
                tab[f"share_{kind}"].to_numpy(),
                h * 0.92,
                color=KIND_COLORS[kind],
                label=KIND_NAMES[kind],
            )
        right = float(max(tab["share_lora"].max(), tab["share_mlp"].max()))
        for yi, (lo, ml, en) in enumerate(
            tab.select("share_lora", "share_mlp", "enrichment").iter_rows()
        ):
            ax.text(
                max(lo, ml) + 0.02 * right,
                yi,
                _enrichment_text(en),
                va="center",
                fontsize=style.font_size - 1.5,
                fontweight="bold" if en is None or en >= 1 else "normal",
            )
        labels = [textwrap.fill(s, wrap) for s in tab["name"].to_list()]
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlim(0, right * 1.25)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.set_xlabel("share of features (enrichment = LoRA / MLP)")
        ax.legend(
            loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, handlelength=1.0
        )
        add_footer(fig, footer, style)
    return fig
