"""The steering sweep: what happens to generations as a LoRA direction is scaled.

Used by rule `figure_steering` (workflow/rules/figures.smk) on
`steering/sweep.parquet`: long format `target, scale, metric, value`
(optional `lo`, `hi` for an interval), one row per (target, scale, metric).
One panel per metric, one line per steered target, scale on a symmetric
log axis because the paper needed magnitudes of 50x and more.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import polars as pl

from lorascope.figures.style import (
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

__all__ = ["plot_steering"]


def plot_steering(
    sweep: pl.DataFrame,
    style: FigureStyle,
    footer: str | None = None,
    max_targets: int = 8,
    source: str = "sweep.parquet",
) -> plt.Figure:
    require_columns(sweep, ["target", "scale", "metric", "value"], source)
    metrics = sweep["metric"].unique(maintain_order=True).to_list()
    targets = sweep["target"].unique(maintain_order=True).to_list()
    if len(targets) > max_targets:
        raise ValueError(
            f"{source}: {len(targets)} steering targets, more than "
            f"figures.steering.max_targets={max_targets} lines can be told apart"
        )
    colors = plt.get_cmap("tab10").colors
    with paper_rc(style):
        fig, axes = plt.subplots(
            len(metrics),
            1,
            figsize=style.size(0.2 + 0.42 * len(metrics)),
            sharex=True,
            squeeze=False,
        )
        for ax, metric in zip(axes[:, 0], metrics, strict=True):
            for ti, target in enumerate(targets):
                sub = sweep.filter(
                    (pl.col("metric") == metric) & (pl.col("target") == target)
                ).sort("scale")
                if sub.height == 0:
                    continue
                x, y = sub["scale"].to_numpy(), sub["value"].to_numpy()
                color = colors[ti % len(colors)]
                ax.plot(x, y, marker="o", ms=2.5, color=color, label=str(target))
                if {"lo", "hi"} <= set(sub.columns):
                    ax.fill_between(
                        x,
                        sub["lo"].to_numpy(),
                        sub["hi"].to_numpy(),
                        color=color,
                        alpha=0.18,
                        linewidth=0,
                    )
            ax.set_ylabel(metric.replace("_", " "))
            ax.axvline(1.0, color="#888888", lw=0.5, ls=":")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("steering scale (× the direction's activation)")
        axes[0, 0].legend(
            loc="best", ncol=2 if len(targets) > 3 else 1, handlelength=1.2
        )
        if footer:
            add_footer(fig, footer, style)
    return fig
