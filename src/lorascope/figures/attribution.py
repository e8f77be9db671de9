"""Attribution against exact removal (beyond the paper, issue 28).

Used by rule `figure_attribution` (workflow/rules/figures.smk). Inputs:
`attribution/exact.parquet` (`kind, unit, target, estimate, exact`: per
component / SAE latent the estimated and the measured change of the target
on the validation sequences) and `attribution/validation.parquet` (`kind,
target, rho, rho_lo, rho_hi, n_units`), both written by rule
`feature_attribution` (`lorascope.attribution.tables`). One panel per kind
(rows) and target (columns): estimate against exact with the diagonal, the
Spearman rho and its bootstrap interval in the corner.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from lorascope.figures.style import (
    KIND_COLORS,
    KIND_SHORT,
    Figure,
    FigureStyle,
    paper_rc,
    require_columns,
)

__all__ = ["draw", "plot_validation"]


def plot_validation(
    exact: pl.DataFrame, validation: pl.DataFrame, style: FigureStyle
) -> plt.Figure:
    require_columns(exact, ["kind", "unit", "target", "estimate", "exact"],
                    "attribution/exact.parquet")  # fmt: skip
    require_columns(validation, ["kind", "target", "rho", "rho_lo", "rho_hi"],
                    "attribution/validation.parquet")  # fmt: skip
    kinds = [k for k in ("lora", "sae") if k in set(exact["kind"].to_list())]
    targets = list(dict.fromkeys(exact["target"].to_list()))
    if not kinds or not targets:
        raise ValueError("attribution/exact.parquet has no rows to plot")
    stats = {(r["kind"], r["target"]): r for r in validation.iter_rows(named=True)}
    with paper_rc(style):
        fig, axes = plt.subplots(
            len(kinds), len(targets), figsize=style.size(0.45 * len(kinds) + 0.1),
            squeeze=False, gridspec_kw={"hspace": 0.7, "wspace": 0.45},
        )  # fmt: skip
        for i, kind in enumerate(kinds):
            for j, target in enumerate(targets):
                ax = axes[i][j]
                part = exact.filter(
                    (pl.col("kind") == kind) & (pl.col("target") == target)
                )
                x, y = part["exact"].to_numpy(), part["estimate"].to_numpy()
                ax.scatter(x, y, s=4, color=KIND_COLORS[kind], linewidths=0)
                if len(x):
                    lim = float(np.nanmax(np.abs(np.r_[x, y]))) or 1.0
                    ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.6, zorder=0)
                r = stats.get((kind, target))
                rho = (
                    f"ρ {r['rho']:.2f} [{r['rho_lo']:.2f}, {r['rho_hi']:.2f}]"
                    if r and np.isfinite(r["rho"]) else "ρ n/a"
                )  # fmt: skip
                ax.set_title(f"{KIND_SHORT[kind]} · {target}")
                ax.text(0.04, 0.96, rho, transform=ax.transAxes, va="top",
                        fontsize=style.font_size - 2)  # fmt: skip
                ax.tick_params(labelsize=style.font_size - 2)
                if i == len(kinds) - 1:
                    ax.set_xlabel("exact Δ")
                if j == 0:
                    ax.set_ylabel("estimated Δ")
    return fig


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """Estimated vs exact removal effects (rule figure_attribution)."""
    fig = plot_validation(data["exact"], data["validation"], style)
    return Figure(fig)
