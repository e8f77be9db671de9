"""Fig. 1 (scores): how well the explanations predict their features, per
scorer and feature kind (beyond the paper).

Used by rule `figure_scores` (workflow/rules/figures.smk) on
`autointerp/summary/scores.parquet` as written by
`lorascope.autointerp.summary.score_means`: one row per (kind, scorer) with
`mean, ci_low, ci_high` (percentile bootstrap over features, 95%), `n_ok`
and the failure counts. Detection and fuzzing are balanced accuracies
(chance 0.5, dashed); simulation is a correlation (chance 0). A scorer with
no scored feature (not run) is left out; failed replies are counted in the
footer, never drawn as 0.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lorascope.core.labels import explainer_label
from lorascope.figures.style import (
    KIND_COLORS,
    KIND_SHORT,
    Figure,
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

__all__ = ["plot_scores"]

SCORER_NAMES = {
    "detection": "detection\n(bal. acc.)",
    "fuzzing": "fuzzing\n(bal. acc.)",
    "simulation": "simulation\n(Pearson r)",
}
CHANCE = {"detection": 0.5, "fuzzing": 0.5, "simulation": 0.0}


def plot_scores(
    scores: pl.DataFrame,
    kinds: list[str],
    style: FigureStyle,
    footer: str,
    source: str = "scores.parquet",
) -> plt.Figure:
    require_columns(
        scores,
        ["kind", "scorer", "n_ok", "n_failed", "mean", "ci_low", "ci_high"],
        source,
    )
    drawn = scores.filter(pl.col("kind").is_in(kinds) & pl.col("mean").is_not_null())
    scorers = [s for s in SCORER_NAMES if s in set(drawn["scorer"])]
    if not scorers:
        raise ValueError(f"{source}: no scorer has a scored feature for {kinds}")
    with paper_rc(style):
        fig, ax = plt.subplots(figsize=style.size(0.55))
        width = 0.8 / len(kinds)
        x = np.arange(len(scorers))
        for i, kind in enumerate(kinds):
            sub = {r["scorer"]: r for r in drawn.filter(pl.col("kind") == kind).rows(
                named=True)}  # fmt: skip
            pos = x + (i - (len(kinds) - 1) / 2) * width
            for xi, s in zip(pos, scorers, strict=True):
                r = sub.get(s)
                if r is None:
                    continue
                err = [[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]]
                label = KIND_SHORT[kind] if s == scorers[0] else None
                ax.errorbar(xi, r["mean"], yerr=err, fmt="o", ms=3.5,
                            color=KIND_COLORS[kind], elinewidth=0.8, capsize=1.5,
                            label=label)  # fmt: skip
        for j, s in enumerate(scorers):
            ax.hlines(CHANCE[s], j - 0.45, j + 0.45, colors="0.6", linestyles="--",
                      linewidth=0.7)  # fmt: skip
        ax.set_xticks(x, [SCORER_NAMES[s] for s in scorers])
        ax.set_ylabel("mean score over features")
        ax.set_ylim(min(-0.05, float(drawn["ci_low"].min()) - 0.05), 1.05)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(kinds),
                  handlelength=1.0, columnspacing=1.0)  # fmt: skip
        failed = int(scores.filter(pl.col("kind").is_in(kinds))["n_failed"].sum())
        add_footer(
            fig, f"{footer}; 95% bootstrap intervals; {failed} failed replies", style
        )
    return fig


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """From `autointerp/summary/scores.parquet` (rule figure_scores)."""
    footer = explainer_label(data["usage"])
    fig = plot_scores(data["scores"], list(options["kinds"]), style, footer)
    return Figure(fig, note=footer)
