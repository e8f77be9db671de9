"""Rules figure_<name>: one figure of the figure table (workflow/rules/figures.smk),
drawn by `lorascope.figures.<module>.draw` and saved as PNG + PDF."""

import importlib

import polars as pl

from lorascope.core.io import read_json, write_table
from lorascope.core.runtime import script_logging
from lorascope.figures.style import FigureData, FigureStyle, save_figure

smk = snakemake  # noqa: F821 (injected by Snakemake)


def read(path: str):
    return pl.read_parquet(path) if path.endswith(".parquet") else read_json(path)


with script_logging(smk) as log:
    paths = {name: smk.input[name] for name in smk.input.keys()}
    data = FigureData({name: read(p) for name, p in paths.items()}, paths)
    style = FigureStyle.from_config(smk.params.style)
    module = importlib.import_module(f"lorascope.figures.{smk.params.plotter}")
    drawn = module.draw(data, dict(smk.params.options), style)
    save_figure(drawn.fig, [smk.output.png, smk.output.pdf], style.dpi)
    for name, table in drawn.tables.items():
        write_table(table, smk.output[name].removesuffix(".parquet"))
    log.info("wrote %s%s", smk.output.png, f" ({drawn.note})" if drawn.note else "")
