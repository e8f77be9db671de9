"""Behaviour sets against random sets (beyond the paper, issue 28).

Used by rule `figure_behaviour_sets` (workflow/rules/figures.smk), built
when `attribution.set_targets` is not empty. Input: `attribution/sets.parquet`
(`target, set, test, metric, delta, delta_lo, delta_hi`; rule
`behaviour_sets`, `lorascope.attribution.sets`). One panel per target
(rows) and test (necessity: the set removed, against the SAE reconstruction;
sufficiency: the set alone added to the base model), on the target's own
metric (backtracking words per 1k tokens for `backtrack`, accuracy
otherwise): the top set's change with its paired bootstrap interval, and
each random set's change (grey) for the chance level.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lorascope.figures.style import (
    KIND_COLORS,
    Figure,
    FigureStyle,
    paper_rc,
    require_columns,
)

__all__ = ["METRIC_OF", "draw", "plot_sets"]

METRIC_OF = {"backtrack": "backtrack_per_1k_tokens", "answer": "accuracy",
             "loss": "accuracy"}  # fmt: skip
LABEL = {"backtrack_per_1k_tokens": "Δ backtracks\nper 1k tokens",
         "accuracy": "Δ accuracy"}  # fmt: skip


def plot_sets(sets: pl.DataFrame, style: FigureStyle) -> plt.Figure:
    require_columns(sets, ["target", "set", "test", "metric", "delta", "delta_lo",
                           "delta_hi"], "attribution/sets.parquet")  # fmt: skip
    targets = [t for t in dict.fromkeys(sets["target"].to_list()) if t in METRIC_OF]
    if not targets:
        raise ValueError("attribution/sets.parquet has no behaviour set rows")
    tests = ["necessity", "sufficiency"]
    with paper_rc(style):
        fig, axes = plt.subplots(
            len(targets), 2, figsize=style.size(0.4 * len(targets) + 0.1),
            squeeze=False, gridspec_kw={"hspace": 0.8, "wspace": 0.4},
        )  # fmt: skip
        for i, target in enumerate(targets):
            metric = METRIC_OF[target]
            for j, test in enumerate(tests):
                ax = axes[i][j]
                part = sets.filter(
                    (pl.col("target") == target) & (pl.col("test") == test)
                    & (pl.col("metric") == metric)
                )  # fmt: skip
                rand = part.filter(pl.col("set").str.starts_with("random-"))
                ax.scatter(np.zeros(rand.height), rand["delta"].to_numpy(), s=8,
                           color="0.6", label="random sets", zorder=2)  # fmt: skip
                top = part.filter(pl.col("set") == "top")
                if top.height:
                    d, lo, hi = (float(top[c][0]) for c in ("delta", "delta_lo",
                                                            "delta_hi"))  # fmt: skip
                    ax.errorbar([1], [d], yerr=[[d - lo], [hi - d]], fmt="o", ms=3,
                                color=KIND_COLORS["sae"], label="top set")  # fmt: skip
                ax.axhline(0, color="0.3", lw=0.5)
                ax.set_xlim(-0.7, 1.7)
                ax.set_xticks([0, 1], ["random", "top"])
                ax.set_title(f"{target} · {test}")
                if j == 0:
                    ax.set_ylabel(LABEL[metric])
    return fig


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """The behaviour sets against random sets (rule figure_behaviour_sets)."""
    return Figure(plot_sets(data["sets"], style))
