"""Rule figure_table: Table 1 or Table 2 drawn as an image."""

import polars as pl

from lorascope.core.runtime import script_logging
from lorascope.figures.style import FigureStyle, save_figure
from lorascope.figures.table_image import plot_table

smk = snakemake  # noqa: F821 (injected by Snakemake)
TITLES = {
    "table1": "Table 1: accuracy and recovery of the rank-1 LoRA",
    "table2": "Table 2: the LoRA with attention / MLP parts ablated",
}

with script_logging(smk) as log:
    style = FigureStyle.from_config(smk.params.style)
    table = pl.read_parquet(smk.input.table)
    fig = plot_table(
        table,
        list(smk.params.columns),
        TITLES[smk.wildcards.table],
        style,
        source=smk.input.table,
        ci=smk.params.ci,
    )
    save_figure(fig, [smk.output.png, smk.output.pdf], style.dpi)
    log.info("wrote %s", smk.output.png)
