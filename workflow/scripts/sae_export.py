"""Rule sae_export: the SAE as a SAELens dir with provenance, and its
features as JSON for Neuronpedia-style tools."""

from pathlib import Path

import polars as pl

from lorascope.core.io import atomic_path, write_json
from lorascope.core.runtime import script_logging
from lorascope.dashboards.export import adapter_provenance, export_sae, features_json

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    config = smk.params.config
    model_cfg = config["model"]
    provenance = adapter_provenance(Path(smk.input.adapter), model_cfg)
    with atomic_path(smk.output.sae, is_dir=True) as tmp:
        meta = export_sae(
            Path(smk.input.sae), tmp, provenance, pl.read_parquet(smk.input.components)
        )
    doc = features_json(
        pl.read_parquet(smk.input.features),
        pl.read_parquet(smk.input.contexts),
        pl.read_parquet(smk.input.explanations),
        pl.read_parquet(smk.input.scores),
        model_id=str(provenance["model_name"]),
    )
    write_json(doc, smk.output.features)
    log.info(
        "exported %d features; model %s, adapter %s @ %s",
        len(doc["features"]), meta["model_name"], meta["adapter"],
        meta["adapter_revision"],
    )  # fmt: skip
