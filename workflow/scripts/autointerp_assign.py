"""Rule autointerp_assign: one category (SAE: + subcategory) per feature."""

import polars as pl

from lorascope.autointerp.categories import assign_kind
from lorascope.autointerp.clients import usage_frame
from lorascope.core.io import read_json, write_parquet
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    ai, kind = smk.params.ai, smk.wildcards.kind
    table, usage = assign_kind(
        pl.read_parquet(smk.input.explanations),
        pl.read_parquet(smk.input.contexts),
        read_json(smk.input.categories),
        ai["section"], ai["run"], ai["cache"], kind,
    )  # fmt: skip
    log.info("%s: status %s", kind, dict(table.group_by("status").len().iter_rows()))
    write_parquet(table, smk.output.assignments)
    write_parquet(usage_frame(usage), smk.output.usage)
