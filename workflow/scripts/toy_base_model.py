"""Rule toy_base_model: copy the shipped toy base model, or rebuild it."""

from lorascope.core.runtime import script_logging
from lorascope.toy.world import SHIPPED_DIR, materialise_base_model

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    toy_cfg = smk.params.toy
    shipped = str(smk.input.shipped) if smk.input.shipped else SHIPPED_DIR
    log.info("toy base model: %s", "rebuild" if toy_cfg["rebuild"] else shipped)
    materialise_base_model(smk.output.model, toy_cfg, shipped_dir=shipped)
    log.info("toy base model ready in %s", smk.output.model)
