"""Rule figure_ablation: Fig. 3, KL by ablated layer and per component."""

import polars as pl

from lorascope.core.runtime import script_logging
from lorascope.figures.ablation import plot_ablation
from lorascope.figures.style import FigureStyle, save_figure

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    style = FigureStyle.from_config(smk.params.style)
    opts = smk.params.options
    fig = plot_ablation(
        pl.read_parquet(smk.input.layers),
        pl.read_parquet(smk.input.components),
        style,
        log_color=opts["log_color"],
        cmap=opts["cmap"],
    )
    save_figure(fig, [smk.output.png, smk.output.pdf], style.dpi)
    log.info("wrote %s", smk.output.png)
