"""Rule dashboards: static offline HTML pages for every feature (paper App. A)."""

import polars as pl

from lorascope.core.io import atomic_path, read_json
from lorascope.core.labels import explainer_label
from lorascope.core.runtime import script_logging
from lorascope.dashboards.build import DashboardOptions, KindTables, build_dashboards
from lorascope.dashboards.causal import CausalTables

smk = snakemake  # noqa: F821 (injected by Snakemake)
PARTS = ("features", "contexts", "explanations", "assignments", "scores")

with script_logging(smk) as log:
    opts = smk.params.options
    read = lambda part, kind: pl.read_parquet(smk.input[f"{part}_{kind}"])  # noqa: E731
    kinds = {k: KindTables(**{p: read(p, k) for p in PARTS}) for k in opts["kinds"]}
    options = DashboardOptions.from_config(opts)
    label = explainer_label(read_json(smk.input.usage))
    causal = CausalTables(
        pl.read_parquet(smk.input.feature_kl),
        pl.read_parquet(smk.input.direct_effects),
        pl.read_parquet(smk.input.fingerprint),
        accuracy=(
            pl.read_parquet(smk.input.feature_accuracy)
            if "feature_accuracy" in smk.input.keys()
            else None
        ),
    )
    with atomic_path(smk.output.site, is_dir=True) as tmp:
        pcs = smk.input.get("feature_pcs")
        diffing = pl.read_parquet(pcs) if pcs else None
        n = build_dashboards(
            kinds, tmp, label, options, causal, diffing,
            attribution=pl.read_parquet(smk.input.attribution),
            sets=(
                pl.read_parquet(smk.input.sets) if "sets" in smk.input.keys() else None
            ),
        )  # fmt: skip
    log.info("wrote %d feature pages to %s", n, smk.output.site)
