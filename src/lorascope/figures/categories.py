"""Fig. 1 (right): which categories LoRA directions fall into, against MLP neurons.

Used by rule `figure_categories` (workflow/rules/figures.smk). Inputs:
`autointerp/summary/category_shares.parquet` as written by
`lorascope.autointerp.summary.category_shares` (one row per (kind, category):
`share, ci_low, ci_high`; the lora rows carry `enrichment` = LoRA share /
MLP share) and `autointerp/categories.json` for the human-readable names.
Categories are sorted by enrichment so the reasoning-specific ones come
first, as in the paper.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lorascope.core.labels import explainer_label
from lorascope.figures.style import (
    KIND_COLORS,
    KIND_NAMES,
    Figure,
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

__all__ = ["enrichment_table", "plot_categories"]


def category_names(categories: dict) -> dict[str, str]:
    """string_id -> name from categories.json (`categories: [{string_id, name}]`)."""
    try:
        return {
            c["string_id"]: c.get("name") or c["string_id"]
            for c in categories["categories"]
        }
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"categories.json: expected 'categories': [{{string_id, name}}] ({err})"
        ) from None


def enrichment_table(
    shares: pl.DataFrame,
    names: dict[str, str],
    source: str = "category_shares.parquet",
) -> pl.DataFrame:
    """One row per category: `category, name, share_lora, lo_lora, hi_lora,
    share_mlp, lo_mlp, hi_mlp, enrichment` (null when the MLP share is 0),
    most enriched first (categories only LoRA has lead)."""
    require_columns(
        shares, ["kind", "category", "share", "ci_low", "ci_high", "enrichment"], source
    )
    parts = []
    for kind in ("lora", "mlp"):
        sub = shares.filter(pl.col("kind") == kind)
        if sub.height == 0:
            raise ValueError(f"{source}: no rows for kind {kind!r}")
        cols = [
            pl.col("share").alias(f"share_{kind}"),
            pl.col("ci_low").alias(f"lo_{kind}"),
            pl.col("ci_high").alias(f"hi_{kind}"),
        ]
        if kind == "lora":
            cols.append(pl.col("enrichment"))
        parts.append(sub.select("category", *cols))
    unknown = set(parts[0]["category"].to_list()) - set(names)
    if unknown:
        raise ValueError(
            f"{source}: categories {sorted(unknown)} not in categories.json"
        )
    tab = parts[0].join(parts[1], on="category", how="full", coalesce=True)
    tab = tab.with_columns(
        pl.col("^(share|lo|hi)_.*$").fill_null(0.0),
        name=pl.col("category").replace_strict(names, default=pl.col("category")),
    )
    return tab.sort(
        [
            pl.col("enrichment").is_null() & (pl.col("share_lora") > 0),
            "enrichment",
            "share_lora",
        ],
        descending=[True, True, True],
        nulls_last=True,
    )


def _enrichment_text(value: float | None) -> str:
    return "LoRA only" if value is None else f"{value:.1f}×"


def plot_categories(
    shares: pl.DataFrame,
    names: dict[str, str],
    style: FigureStyle,
    footer: str,
    wrap: int = 26,
) -> plt.Figure:
    """Horizontal paired bars of category shares (95% intervals), enrichment printed."""
    tab = enrichment_table(shares, names)
    n = tab.height
    with paper_rc(style):
        fig, ax = plt.subplots(figsize=style.size(0.16 + 0.085 * n))
        y = np.arange(n)
        h = 0.4
        for off, kind in ((-h / 2, "lora"), (h / 2, "mlp")):
            share = tab[f"share_{kind}"].to_numpy()
            err = np.vstack(
                [
                    share - tab[f"lo_{kind}"].to_numpy(),
                    tab[f"hi_{kind}"].to_numpy() - share,
                ]
            )
            ax.barh(
                y + off,
                share,
                h * 0.92,
                xerr=np.clip(err, 0, None),
                error_kw={"elinewidth": 0.5, "capsize": 0, "ecolor": "#333333"},
                color=KIND_COLORS[kind],
                label=KIND_NAMES[kind],
            )
        right = float(max(tab["hi_lora"].max(), tab["hi_mlp"].max()))
        for yi, (lo, ml, en) in enumerate(
            tab.select("hi_lora", "hi_mlp", "enrichment").iter_rows()
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
        footer += "; 95% bootstrap intervals"
        ax.legend(
            loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, handlelength=1.0
        )
        add_footer(fig, footer, style)
    return fig


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """Fig. 1 right from the category shares (rule figure_categories)."""
    footer = explainer_label(data["usage"])
    names = category_names(data["categories"])
    fig = plot_categories(data["shares"], names, style, footer)
    return Figure(fig, note=f"{footer}; {len(names)} categories")
