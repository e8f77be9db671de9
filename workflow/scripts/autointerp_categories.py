"""Rule autointerp_categories: 5-8 categories (+ SAE subcategories)."""

import polars as pl

from lorascope.autointerp.categories import propose_categories
from lorascope.autointerp.clients import usage_frame
from lorascope.core.io import write_json, write_parquet
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    ai = smk.params.ai
    explanations = {
        kind: pl.read_parquet(path)
        for kind, path in zip(smk.params.kinds, smk.input.explanations, strict=True)
    }
    section, run, cache = ai["section"], ai["run"], ai["cache"]
    cats, usage = propose_categories(explanations, section, run, cache)
    log.info("%d categories by %s from samples %s", len(cats["categories"]),
             cats["explainer"], cats["sample"])  # fmt: skip
    write_json(cats, smk.output.categories)
    write_parquet(usage_frame(usage), smk.output.usage)
