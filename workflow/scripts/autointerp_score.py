"""Rule autointerp_score: detection balanced accuracy per explanation."""

import polars as pl

from lorascope.autointerp.clients import usage_frame
from lorascope.autointerp.scoring import score_kind
from lorascope.core.io import write_parquet
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    ai, kind = smk.params.ai, smk.wildcards.kind
    table, usage = score_kind(
        pl.read_parquet(smk.input.explanations),
        pl.read_parquet(smk.input.contexts),
        ai["section"], ai["run"], ai["cache"], kind,
    )  # fmt: skip
    log.info("%s: mean balanced accuracy %s", kind, table["balanced_accuracy"].mean())
    write_parquet(table, smk.output.scores)
    write_parquet(usage_frame(usage), smk.output.usage)
