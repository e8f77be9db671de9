"""Fig. 3: how much the output distribution moves when LoRA parts are removed.

Used by rule `figure_ablation` (workflow/rules/figures.smk). Inputs:
`ablation/kl_layers.parquet` (`layer, kl_mean, kl_seq_sem`: token-pooled
KL(full || ablated) with every component of that layer ablated, and the
standard error over sequences) and `ablation/kl_components.parquet`
(`index, layer, module, kl_mean`: one component ablated at a time); both are
written by `lorascope.ablation.setup.summarise`. Panel (a) plots KL by layer,
panel (b) is the module x layer heatmap, with each module's mean KL printed
beside its row.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.colors import LogNorm, Normalize

from lorascope.figures.style import (
    KIND_COLORS,
    MODULE_ORDER,
    Figure,
    FigureStyle,
    paper_rc,
    require_columns,
)

__all__ = ["component_grid", "plot_ablation"]


def component_grid(
    comps: pl.DataFrame, source: str = "kl_components.parquet"
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """KL as a (modules x layers) array, the module names and the layer numbers.

    Modules follow q k v o gate up down. At rank > 1 a cell is the whole
    module removed (`module_kl_mean`, the same on each of its directions'
    rows): removing it is neither the mean nor the sum of removing its
    directions one at a time. Missing (layer, module) cells are NaN (blank).
    """
    require_columns(comps, ["layer", "module", "kl_mean"], source)
    unknown = set(comps["module"].unique().to_list()) - set(MODULE_ORDER)
    if unknown:
        raise ValueError(f"{source}: unknown module name(s) {sorted(unknown)}")
    whole = (
        "module_kl_mean" in comps.columns
        and comps["module_kl_mean"].is_not_null().all()
    )
    value = pl.col("module_kl_mean").first() if whole else pl.col("kl_mean").first()
    if not whole and comps.group_by("layer", "module").len()["len"].max() > 1:
        raise ValueError(
            f"{source}: several directions per (layer, module) but no "
            "module_kl_mean column (a rank > 1 table of an older version: rerun "
            "rule kl_ablation)"
        )
    cell = comps.group_by("layer", "module").agg(value.alias("kl_mean"))
    layers = np.arange(int(comps["layer"].min()), int(comps["layer"].max()) + 1)
    modules = [m for m in MODULE_ORDER if m in set(cell["module"].to_list())]
    grid_ML = np.full((len(modules), len(layers)), np.nan)
    for layer, module, kl in cell.iter_rows():
        grid_ML[modules.index(module), layer - layers[0]] = kl
    return grid_ML, modules, layers


def plot_ablation(
    layers_df: pl.DataFrame,
    comps: pl.DataFrame,
    style: FigureStyle,
    log_color: bool = True,
    cmap: str = "magma_r",
) -> plt.Figure:
    require_columns(layers_df, ["layer", "kl_mean"], "kl_layers.parquet")
    grid_ML, modules, layers = component_grid(comps)
    lay = layers_df.sort("layer")
    with paper_rc(style):
        fig, (ax_a, ax_b) = plt.subplots(
            2,
            1,
            figsize=style.size(1.05),
            gridspec_kw={"height_ratios": [1.0, 1.3], "hspace": 0.55},
        )
        x = lay["layer"].to_numpy()
        # scale to a power of ten by hand: matplotlib's offset text would sit
        # on top of the panel title
        peak = float(np.nanmax(lay["kl_mean"].to_numpy()))
        exp = int(np.floor(np.log10(peak))) if peak > 0 else 0
        unit = 10.0**exp
        kl = lay["kl_mean"].to_numpy() / unit
        ax_a.bar(x, kl, 0.8, color=KIND_COLORS["lora"], linewidth=0)
        # 95% interval over sequences; NaN (one sequence) draws no bar
        if "kl_seq_sem" in lay.columns:
            sem = lay["kl_seq_sem"].fill_null(np.nan).to_numpy() / unit
            if np.isfinite(sem).any():
                ax_a.errorbar(
                    x,
                    kl,
                    yerr=1.96 * np.nan_to_num(sem),
                    fmt="none",
                    ecolor="#333333",
                    elinewidth=0.5,
                    capsize=0,
                )
        ax_a.set_xlim(layers[0] - 0.6, layers[-1] + 0.6)
        ax_a.set_xlabel("ablated layer")
        ax_a.set_ylabel("KL" + (f" (×10$^{{{exp}}}$)" if exp else ""))
        ax_a.set_title("(a) all components of one layer removed", loc="left")

        finite = grid_ML[np.isfinite(grid_ML)]
        positive = finite[finite > 0]
        if log_color and positive.size:
            norm = LogNorm(
                vmin=max(positive.min(), positive.max() * 1e-4), vmax=positive.max()
            )
            shown_ML = np.where(grid_ML > 0, grid_ML, np.nan)
        else:
            norm = Normalize(vmin=0, vmax=float(finite.max()) if finite.size else 1)
            shown_ML = grid_ML
        im = ax_b.imshow(
            shown_ML,
            aspect="auto",
            cmap=cmap,
            norm=norm,
            interpolation="nearest",
            extent=(layers[0] - 0.5, layers[-1] + 0.5, len(modules) - 0.5, -0.5),
        )
        ax_b.set_yticks(range(len(modules)), modules)
        ax_b.set_xlabel("layer")
        ax_b.set_title("(b) one component removed", loc="left")
        for spine in ax_b.spines.values():
            spine.set_visible(False)
        means = np.nanmean(grid_ML, axis=1)
        for i, m in enumerate(means):
            ax_b.text(
                1.01,
                1 - (i + 0.5) / len(modules),
                f"{m:.1e}",
                transform=ax_b.transAxes,
                va="center",
                fontsize=style.font_size - 2.5,
                fontweight="bold" if m == np.nanmax(means) else "normal",
            )
        ax_b.text(
            1.01,
            1.02,
            "mean",
            transform=ax_b.transAxes,
            fontsize=style.font_size - 2.5,
            va="bottom",
        )
        cbar = fig.colorbar(
            im, ax=ax_b, orientation="horizontal", fraction=0.08, pad=0.42, aspect=40
        )
        cbar.set_label("KL(full ‖ ablated)", fontsize=style.font_size - 1)
        cbar.ax.tick_params(labelsize=style.font_size - 2)
    return fig


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """Fig. 3 from the KL ablation tables (rule figure_ablation)."""
    opts = options["ablation"]
    fig = plot_ablation(
        data["layers"],
        data["components"],
        style,
        log_color=opts["log_color"],
        cmap=opts["cmap"],
    )
    return Figure(fig)
