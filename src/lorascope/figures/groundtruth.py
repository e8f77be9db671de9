"""Ground truth in the embedded world: how well each population's features
recover the roles tokens play.

Used by rule `figure_groundtruth` (workflow/rules/figures.smk, toy world
only) on `groundtruth/matched.parquet` (`lorascope.groundtruth.tables`):
one panel per source (SFT traces, the LoRA's generations), one group of
bars per role, one bar per kind: the best F1 of the feature matched to the
role one to one. A dot above a bar: its explanation names the role.
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

__all__ = ["plot_groundtruth"]

ROLE_NAMES = {
    "column": "column",
    "carry_in": "carry\nin",
    "carry_out": "carry\nout",
    "slip": "slip",
    "wait": "Wait,",
    "answer": "answer",
    "format": "format",
}
SOURCE_NAMES = {"sft": "SFT traces (generator's roles)",
                "generation": "LoRA generations (parsed roles)"}  # fmt: skip


def plot_groundtruth(
    matched: pl.DataFrame,
    style: FigureStyle,
    footer: str | None = None,
    source_file: str = "matched.parquet",
) -> plt.Figure:
    require_columns(
        matched, ["source", "kind", "role", "best_f1", "names_role"], source_file
    )
    if matched.height == 0:
        raise ValueError(f"{source_file}: no matched roles to plot")
    sources = matched["source"].unique(maintain_order=True).to_list()
    kinds = [k for k in ("lora", "mlp", "sae") if k in set(matched["kind"])]
    roles = [r for r in ROLE_NAMES if r in set(matched["role"])]
    width = 0.8 / len(kinds)
    with paper_rc(style):
        fig, axes = plt.subplots(
            len(sources), 1, figsize=style.size(0.4 * len(sources) + 0.15),
            sharex=True, squeeze=False,
        )  # fmt: skip
        for ax, source in zip(axes[:, 0], sources, strict=True):
            sub = matched.filter(pl.col("source") == source)
            for ki, kind in enumerate(kinds):
                rows = {
                    r["role"]: r
                    for r in sub.filter(pl.col("kind") == kind).iter_rows(named=True)
                }
                x = np.arange(len(roles)) + (ki - (len(kinds) - 1) / 2) * width
                y = [rows[r]["best_f1"] if r in rows else np.nan for r in roles]
                ax.bar(
                    x,
                    y,
                    width,
                    color=KIND_COLORS.get(kind),
                    label=KIND_SHORT.get(kind, kind),
                )
                for xi, r in zip(x, roles, strict=True):
                    if r in rows and rows[r]["names_role"]:
                        ax.plot(xi, rows[r]["best_f1"] + 0.04, "k.", ms=3)
            ax.set_ylim(0, 1.12)
            ax.set_ylabel("matched\nbest F1")
            ax.set_title(SOURCE_NAMES.get(source, source), fontsize=style.font_size)
        ax.set_xticks(np.arange(len(roles)), [ROLE_NAMES[r] for r in roles])
        axes[0, 0].legend(
            loc="lower center", bbox_to_anchor=(0.5, 1.15), ncol=len(kinds),
            handlelength=1.0,
        )  # fmt: skip
        if footer:
            add_footer(fig, footer, style)
    return fig


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """The ground-truth figure (rule figure_groundtruth)."""
    footer = explainer_label(data["usage"]) + "; dot: explanation names the role"
    fig = plot_groundtruth(data["matched"], style, footer, data.source("matched"))
    return Figure(fig, note=footer)
