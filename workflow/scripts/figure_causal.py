"""Rule figure_causal: ablation KL against interpretability, per feature kind."""

import polars as pl

from lorascope.core.io import read_json, write_table
from lorascope.core.labels import explainer_label
from lorascope.core.runtime import script_logging
from lorascope.figures.causal import causal_frame, plot_causal
from lorascope.figures.style import FigureStyle, save_figure

smk = snakemake  # noqa: F821 (injected by Snakemake)
KINDS = ["lora", "sae"]

with script_logging(smk) as log:
    style = FigureStyle.from_config(smk.params.style)
    footer = explainer_label(read_json(smk.input.usage))
    frame = causal_frame(
        pl.read_parquet(smk.input.feature_kl),
        {k: pl.read_parquet(smk.input[f"explanations_{k}"]) for k in KINDS},
        {k: pl.read_parquet(smk.input[f"scores_{k}"]) for k in KINDS},
    )
    opts = smk.params.options
    fig, stats = plot_causal(
        frame, KINDS, style, opts["bootstrap_samples"], smk.params.seed, footer
    )
    save_figure(fig, [smk.output.png, smk.output.pdf], style.dpi)
    write_table(stats, smk.output.stats.removesuffix(".parquet"))
    log.info("wrote %s (%s)\n%s", smk.output.png, footer, stats)
