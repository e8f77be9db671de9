"""Emergence: when the reference adapter's features appear during its
training.

Used by rule `figure_emergence` (workflow/rules/figures.smk) on the sweep's
emergence curve (`lorascope.sweeps.tables.emergence`): one panel per
feature kind, the share of the final adapter's features already matched
(|activation correlation| at or above the threshold, one to one) at each
checkpoint; black: all features with a Wilson interval, colours: each
category.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import polars as pl

from lorascope.figures.style import (
    KIND_NAMES,
    Figure,
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

__all__ = ["plot_emergence"]

COLUMNS = ["kind", "step", "by", "group", "n", "share", "share_lo", "share_hi"]
# Okabe-Ito without the two colours the kinds use, for categories
PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#CC79A7", "#000080", "#8B4513"]


def plot_emergence(
    curve: pl.DataFrame,
    style: FigureStyle,
    footer: str | None = None,
    source: str = "emergence.parquet",
) -> plt.Figure:
    require_columns(curve, COLUMNS, source)
    kinds = [k for k in ("lora", "sae") if k in set(curve["kind"])]
    cats = sorted(set(curve.filter(pl.col("by") == "category")["group"]))
    with paper_rc(style):
        fig, axes = plt.subplots(
            1, len(kinds), figsize=style.size(0.55), sharey=True, squeeze=False
        )
        for ax, kind in zip(axes[0], kinds, strict=True):
            sub = curve.filter(pl.col("kind") == kind).sort("step")
            for i, cat in enumerate(cats):
                c = sub.filter((pl.col("by") == "category") & (pl.col("group") == cat))
                if c.height:
                    ax.plot(
                        c["step"],
                        c["share"],
                        marker=".",
                        ms=3,
                        lw=0.8,
                        color=PALETTE[i % len(PALETTE)],
                        label=cat,
                    )
            a = sub.filter(pl.col("by") == "all")
            ax.fill_between(
                a["step"], a["share_lo"], a["share_hi"], color="k", alpha=0.1, lw=0
            )  # noqa: E501
            ax.plot(
                a["step"], a["share"], color="k", marker="o", ms=3, lw=1.4, label="all"
            )  # noqa: E501
            n = int(a["n"].max()) if a.height else 0
            ax.set_title(
                f"{KIND_NAMES.get(kind, kind)}\n(n={n})", fontsize=style.font_size
            )  # noqa: E501
            ax.set_xlabel("training step")
            ax.set_ylim(-0.02, 1.02)
        axes[0, 0].set_ylabel("share matched\nin the final adapter")
        fig.tight_layout()
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(
            handles,
            names,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(len(names), 4),
            fontsize=style.font_size - 2,
        )
        if footer:
            add_footer(fig, footer, style)
    return fig


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """The emergence curve (rule figure_emergence)."""
    curve = data["curve"]
    t = curve["threshold"].unique().to_list() if "threshold" in curve.columns else []
    at = f"{t[0]:g}" if len(t) == 1 and t[0] is not None else "threshold"
    footer = f"matched: one-to-one |activation corr| >= {at}; band: Wilson 95%"
    fig = plot_emergence(data["curve"], style, footer, data.source("curve"))
    return Figure(fig, note=footer)
