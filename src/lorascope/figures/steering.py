"""The steering sweep: what happens to generations as a LoRA direction is pushed.

Used by rule `figure_steering` (workflow/rules/figures.smk) on
`steering/sweep.parquet` as written by `lorascope.steering.sweep.sweep`: one row
per (target, alpha) with `label, alpha` and one column per metric
(`accuracy`, `backtrack_per_1k_tokens`, `kl_to_unsteered`, ...). One panel
per metric named in the rule's params, one line per target; alpha on a
symmetric log axis because the paper needed 50x and more. Accuracy gets a
95% Wilson band from `n_samples`.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lorascope.figures.classes import wilson_interval
from lorascope.figures.style import (
    Figure,
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

__all__ = ["label_models", "plot_steering"]

YLABELS = {
    "accuracy": "accuracy",
    "backtrack_per_1k_tokens": "backtracking\nper 1k tokens",
    "kl_to_unsteered": "KL to\nunsteered",
    "mean_generated_tokens": "generated\ntokens",
}


def plot_steering(
    sweep: pl.DataFrame,
    metrics: Sequence[str],
    style: FigureStyle,
    footer: str | None = None,
    max_targets: int = 8,
    source: str = "sweep.parquet",
) -> plt.Figure:
    if not metrics:
        raise ValueError("figures.steering.metrics is empty: nothing to plot")
    require_columns(sweep, ["label", "alpha", *metrics], source)
    targets = sweep["label"].unique(maintain_order=True).to_list()
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
            figsize=style.size(0.2 + 0.34 * len(metrics)),
            sharex=True,
            squeeze=False,
        )
        for ax, metric in zip(axes[:, 0], metrics, strict=True):
            for ti, target in enumerate(targets):
                sub = sweep.filter(pl.col("label") == target).sort("alpha")
                x, y = sub["alpha"].to_numpy(), sub[metric].to_numpy()
                color = colors[ti % len(colors)]
                ax.plot(x, y, marker="o", ms=2.5, color=color, label=str(target))
                if metric == "accuracy" and "n_samples" in sub.columns:
                    lo_hi = np.array(
                        [
                            wilson_interval(round(a * n), n)
                            for a, n in zip(y, sub["n_samples"].to_numpy(), strict=True)
                        ]
                    )
                    ax.fill_between(
                        x, lo_hi[:, 0], lo_hi[:, 1], color=color, alpha=0.15, lw=0
                    )
            ax.set_ylabel(YLABELS.get(metric, metric.replace("_", " ")))
            ax.axvline(0.0, color="#888888", lw=0.5, ls=":")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("steering strength α (× typical |activation|)")
        axes[0, 0].legend(
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=min(len(targets), 3),
            handlelength=1.2,
        )
        if footer:
            add_footer(fig, footer, style)
    return fig


def label_models(sweep: pl.DataFrame) -> pl.DataFrame:
    """Line labels: a target's own label on rank-1 rows, `label [model]` on
    the base / full fine-tune rows of `steering.models` (a table without a
    model column is returned as it is)."""
    if "model" not in sweep.columns:
        return sweep
    other = pl.col("label") + " [" + pl.col("model") + "]"
    rank1 = pl.col("model") == "rank1"
    return sweep.with_columns(label=pl.when(rank1).then("label").otherwise(other))


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """The steering sweep (rule figure_steering)."""
    opts = options["steering"]
    fig = plot_steering(
        label_models(data["sweep"]),
        list(opts["metrics"]),
        style,
        max_targets=opts["max_targets"],
        source=data.source("sweep"),
    )
    return Figure(fig)
