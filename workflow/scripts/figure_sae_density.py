"""Rule figure_sae_density: Fig. 2, SAE activation density by (sub)category."""

import polars as pl

from lorascope.core.io import read_json
from lorascope.core.labels import explainer_label
from lorascope.core.runtime import script_logging
from lorascope.figures.categories import category_names
from lorascope.figures.sae_density import plot_sae_density, subcategory_names
from lorascope.figures.style import FigureStyle, save_figure

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    style = FigureStyle.from_config(smk.params.style)
    footer = explainer_label(read_json(smk.input.usage))
    cats = read_json(smk.input.categories)
    density = pl.read_parquet(smk.input.density)
    fig = plot_sae_density(
        density,
        category_names(cats),
        subcategory_names(cats),
        style,
        footer,
        max_subcategories=smk.params.options["max_subcategories"],
    )
    save_figure(fig, [smk.output.png, smk.output.pdf], style.dpi)
    log.info("wrote %s", smk.output.png)
