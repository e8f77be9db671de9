"""Rule figure_steering: the steering sweep, one panel per metric."""

import polars as pl

from lorascope.core.runtime import script_logging
from lorascope.figures.steering import plot_steering
from lorascope.figures.style import FigureStyle, save_figure

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    style = FigureStyle.from_config(smk.params.style)
    opts = smk.params.options
    fig = plot_steering(
        pl.read_parquet(smk.input.sweep),
        list(opts["metrics"]),
        style,
        max_targets=opts["max_targets"],
        source=smk.input.sweep,
    )
    save_figure(fig, [smk.output.png, smk.output.pdf], style.dpi)
    log.info("wrote %s", smk.output.png)
