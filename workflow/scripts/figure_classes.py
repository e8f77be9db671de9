"""Rule figure_classes: Fig. 1 left, monosemanticity classes per feature kind."""

import polars as pl

from lorascope.core.io import read_json
from lorascope.core.labels import explainer_label
from lorascope.core.runtime import script_logging
from lorascope.figures.classes import plot_classes
from lorascope.figures.style import FigureStyle, save_figure

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    style = FigureStyle.from_config(smk.params.style)
    footer = explainer_label(read_json(smk.input.usage))
    classes = pl.read_parquet(smk.input.classes)
    fig = plot_classes(classes, list(smk.params.kinds), style, footer)
    save_figure(fig, [smk.output.png, smk.output.pdf], style.dpi)
    log.info("wrote %s (%s)", smk.output.png, footer)
