"""Where the full fine-tune's change lives, per layer (rule `figure_diffing`).

Inputs (written by rule `model_diff`, `lorascope.diffing.tables`):
`diffing/residual.parquet` (`source, layer`, `r2_rank1, share_write,
share_sae` with `_lo`/`_hi` intervals, `chance_write`), `diffing/kl_layers.parquet`
(`source, layer, kl_captured_proj, kl_captured_whole` with intervals) and
`diffing/table3.parquet` (`source, metric, value`: the rank-1 adapter's own
`kl_captured_rank1`, drawn as a level). Panel (a): variance of Δh_full
explained by Δh_rank1 and the share of its squared norm in the adapter's
write span / the top SAE features' writes, against a random subspace of the
write span's size; panel (b): share of KL(full || base) removed by writing
Δh_full (projected on the write span, or whole) into the base at one layer.
Training text solid, benchmark texts dashed; shaded bands are 95% intervals
over sequences.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import polars as pl

from lorascope.figures.style import Figure, FigureStyle, paper_rc, require_columns

__all__ = ["draw", "plot_diffing"]

RESIDUAL = {  # column: (label, colour)
    "r2_rank1": ("R² by Δh rank-1", "#0072B2"),
    "share_write": ("in write span", "#009E73"),
    "share_sae": ("in SAE features' writes", "#D55E00"),
    "chance_write": ("random subspace, same dim", "#999999"),
}
KL = {
    "kl_captured_proj": ("Δh_full on write span", "#009E73"),
    "kl_captured_whole": ("all of Δh_full", "#333333"),
}


def _lines(ax, df: pl.DataFrame, columns: dict, style_of) -> None:
    for source in df["source"].unique(maintain_order=True):
        part = df.filter(pl.col("source") == source).sort("layer")
        x = part["layer"].to_numpy()
        for col, (label, color) in columns.items():
            ax.plot(x, part[col].to_numpy(), color=color, linestyle=style_of(source),
                    linewidth=1, marker="o", markersize=2,
                    label=label if source == "train" or style_of(source) == "-"
                    else None)  # fmt: skip
            if f"{col}_lo" in part.columns:
                ax.fill_between(x, part[f"{col}_lo"].to_numpy(),
                                part[f"{col}_hi"].to_numpy(), color=color,
                                alpha=0.15, linewidth=0)  # fmt: skip


def plot_diffing(
    residual: pl.DataFrame, kl_layers: pl.DataFrame, t3: pl.DataFrame, style
) -> plt.Figure:
    require_columns(residual, ["source", "layer", *RESIDUAL], "residual.parquet")
    require_columns(kl_layers, ["source", "layer", *KL], "kl_layers.parquet")
    require_columns(t3, ["source", "metric", "value"], "table3.parquet")
    sources = residual["source"].unique(maintain_order=True).to_list()

    def style_of(source: str) -> str:
        return "-" if source == sources[0] else "--"

    with paper_rc(style):
        fig, (ax_a, ax_b) = plt.subplots(
            2, 1, figsize=style.size(1.15), gridspec_kw={"hspace": 0.6}
        )
        _lines(ax_a, residual, RESIDUAL, style_of)
        ax_a.set_ylabel("share of Δh_full")
        ax_a.set_xlabel("layer")
        ax_a.set_title("(a) residual stream after each layer", loc="left")
        _lines(ax_b, kl_layers, KL, style_of)
        rank1 = t3.filter(pl.col("metric") == "kl_captured_rank1")
        for source, value in rank1.select("source", "value").iter_rows():
            label = "rank-1 adapter" if source == sources[0] else None
            ax_b.axhline(value, color="#0072B2", linestyle=style_of(source),
                         linewidth=0.8, label=label)  # fmt: skip
        ax_b.set_ylabel("KL(full‖base) removed")
        ax_b.set_xlabel("layer written into the base")
        ax_b.set_title("(b) output: one layer's Δh_full written in", loc="left")
        for ax in (ax_a, ax_b):
            ax.legend(fontsize=style.font_size - 2.5, loc="best", framealpha=0.8,
                      edgecolor="none")  # fmt: skip
        others = ", ".join(sources[1:])
        fig.text(0.01, 0.005, f"solid: {sources[0]}" + (f"; dashed: {others}"
                 if others else ""), fontsize=style.font_size - 2.5)  # fmt: skip
    return fig


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """The per-layer diff figure (rule figure_diffing)."""
    return Figure(plot_diffing(data["residual"], data["kl_layers"], data["table3"],
                               style))  # fmt: skip
