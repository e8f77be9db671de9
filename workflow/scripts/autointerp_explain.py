"""Rule autointerp_explain: explanation + monosemanticity class per feature."""

import polars as pl

from lorascope.autointerp.clients import usage_frame
from lorascope.autointerp.explain import explain_kind
from lorascope.core.io import write_parquet
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    ai, kind = smk.params.ai, smk.wildcards.kind
    features = pl.read_parquet(smk.input.features)
    contexts = pl.read_parquet(smk.input.contexts)
    table, usage = explain_kind(
        features, contexts, ai["section"], ai["run"], ai["cache"], kind
    )
    counts = dict(table.group_by("status").len().iter_rows())
    log.info("%s: %d features, explainer %s, status %s", kind, table.height,
             table["explainer"][0] if table.height else "-", counts)  # fmt: skip
    write_parquet(table, smk.output.explanations)
    write_parquet(usage_frame(usage), smk.output.usage)
