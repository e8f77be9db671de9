"""Recovery against rank: how much of the full fine-tune's gain a rank-r
LoRA recovers, and its accuracy, as the rank (and the trainable parameters)
grow.

Used by rule `figure_recovery_rank` (workflow/rules/figures.smk) on the
sweep's recovery table (`lorascope.sweeps.recovery`): one column of panels
per benchmark, recovery on top and accuracy below, against the rank on a
log axis; the top axis reads the same positions as trainable parameters
(the adapter's size grows linearly with the rank). Points: the rank's
end-of-training seeds pooled, with their bootstrap interval; small dots:
each seed alone. Accuracy panels show the base model and the full
fine-tune as lines with their intervals shaded.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.ticker import NullLocator

from lorascope.figures.style import (
    KIND_COLORS,
    Figure,
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

__all__ = ["params_axis", "plot_recovery_rank"]

COLUMNS = [
    "level",
    "rank",
    "step",
    "benchmark",
    "trainable_params",
    "accuracy",
    "accuracy_lo",
    "accuracy_hi",
    "recovery",
    "recovery_lo",
    "recovery_hi",
    "base",
    "base_lo",
    "base_hi",
    "full",
    "full_lo",
    "full_hi",
]
LORA = KIND_COLORS["lora"]
BASE, FULL = "#999999", "#000000"


def params_axis(ranks, params):
    """(rank -> params, params -> rank) for a secondary axis: log-log linear
    through the measured points, extended along the end segments (exact
    for an adapter whose size is proportional to the rank)."""
    lr, lp = np.log(np.asarray(ranks, float)), np.log(np.asarray(params, float))
    order = np.argsort(lr)
    lr, lp = lr[order], lp[order]
    if len(lr) == 1:  # one rank: the size per rank is all there is
        lr, lp = np.array([lr[0], lr[0] + 1]), np.array([lp[0], lp[0] + 1])

    def through(x, xs, ys):
        x = np.log(np.clip(np.asarray(x, float), 1e-300, None))
        i = np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2)
        slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
        return np.exp(ys[i] + slope * (x - xs[i]))

    return (lambda r: through(r, lr, lp)), (lambda p: through(p, lp, lr))


def _yerr(df: pl.DataFrame, col: str) -> np.ndarray:
    v = df[col].to_numpy().astype(float)
    lo = df[f"{col}_lo"].to_numpy().astype(float)
    hi = df[f"{col}_hi"].to_numpy().astype(float)
    return np.nan_to_num(np.stack([v - lo, hi - v]), nan=0.0)


def plot_recovery_rank(
    table: pl.DataFrame,
    style: FigureStyle,
    footer: str | None = None,
    source: str = "recovery.parquet",
) -> plt.Figure:
    require_columns(table, COLUMNS, source)
    ranks_df = table.filter(pl.col("level") == "rank").sort("rank")
    seeds_df = table.filter((pl.col("level") == "member") & pl.col("step").is_null())
    if ranks_df.height == 0:
        raise ValueError(f"{source}: no per-rank rows (level 'rank') to plot")
    benches = ranks_df["benchmark"].unique(maintain_order=True).to_list()
    per_rank = ranks_df.unique("rank", maintain_order=True)
    forward, inverse = params_axis(per_rank["rank"], per_rank["trainable_params"])
    with paper_rc(style):
        fig, axes = plt.subplots(
            2, len(benches), figsize=style.size(0.85), sharex=True, squeeze=False
        )
        for j, bench in enumerate(benches):
            rk = ranks_df.filter(pl.col("benchmark") == bench)
            sd = seeds_df.filter(pl.col("benchmark") == bench)
            x = rk["rank"].to_numpy()
            for i, col in enumerate(("recovery", "accuracy")):
                ax = axes[i, j]
                ax.set_xscale("log", base=2)
                if col == "accuracy":
                    row = rk.row(0, named=True)
                    for v, color in (("base", BASE), ("full", FULL)):
                        ax.axhline(row[v], color=color, lw=0.8, ls="--", label=v)
                        ax.axhspan(
                            row[f"{v}_lo"],
                            row[f"{v}_hi"],
                            color=color,
                            alpha=0.12,
                            lw=0,
                        )  # noqa: E501
                else:
                    for level in (0.0, 1.0):
                        ax.axhline(level, color="#bbbbbb", lw=0.6, ls=":")
                ax.errorbar(
                    x,
                    rk[col].to_numpy().astype(float),
                    yerr=_yerr(rk, col),
                    color=LORA,
                    marker="o",
                    ms=3,
                    capsize=2,
                    lw=1,
                    label="rank r (seeds pooled)",
                )
                if sd.height:
                    ax.plot(
                        sd["rank"],
                        sd[col].to_numpy().astype(float),
                        ".",
                        color=LORA,
                        alpha=0.45,
                        ms=3,
                        label="one seed",
                    )
                ax.set_xticks(x, [str(r) for r in x])
                ax.minorticks_off()
            axes[0, j].set_title(bench, fontsize=style.font_size)
            top = axes[0, j].secondary_xaxis("top", functions=(forward, inverse))
            top.set_xticks(
                per_rank["trainable_params"].to_list(),
                [_short(p) for p in per_rank["trainable_params"]],
            )
            top.xaxis.set_minor_locator(NullLocator())
            top.tick_params(labelsize=style.font_size - 2)
            if j == 0:
                top.set_xlabel("trainable parameters", fontsize=style.font_size - 1)
            axes[1, j].set_xlabel("LoRA rank")
        axes[0, 0].set_ylabel("recovery")
        axes[1, 0].set_ylabel("accuracy")
        handles, names = axes[1, 0].get_legend_handles_labels()
        fig.tight_layout()
        fig.legend(
            handles,
            names,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=len(names),
            fontsize=style.font_size - 2,
            handlelength=1.5,
            columnspacing=1.0,
        )
        if footer:
            add_footer(fig, footer, style)
    return fig


def _short(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n))


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """Recovery and accuracy against rank (rule figure_recovery_rank)."""
    ranks = data["recovery"].filter(pl.col("level") == "rank")
    seeds = (
        sorted(set(ranks["n_seeds"].to_list())) if "n_seeds" in ranks.columns else []
    )
    footer = (
        "recovery = (rank r - base) / (full - base); bars: paired bootstrap\n"
        f"over problems; seeds pooled per rank: {', '.join(map(str, seeds)) or '?'}"
    )
    fig = plot_recovery_rank(data["recovery"], style, footer, data.source("recovery"))
    return Figure(fig, note=footer)
