"""Rule figure_categories: Fig. 1 right, category shares and LoRA/MLP enrichment."""

import polars as pl

from lorascope.core.io import read_json
from lorascope.core.labels import explainer_label
from lorascope.core.runtime import script_logging
from lorascope.figures.categories import category_names, plot_categories
from lorascope.figures.style import FigureStyle, save_figure

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    style = FigureStyle.from_config(smk.params.style)
    footer = explainer_label(read_json(smk.input.usage))
    names = category_names(read_json(smk.input.categories))
    shares = pl.read_parquet(smk.input.shares)
    fig = plot_categories(shares, names, style, footer)
    save_figure(fig, [smk.output.png, smk.output.pdf], style.dpi)
    log.info("wrote %s (%d categories)", smk.output.png, len(names))
