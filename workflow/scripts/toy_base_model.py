"""Rule toy_base_model: copy the shipped toy base model, or rebuild it."""

from lorascope.core.runtime import script_logging
from lorascope.toy.world import SHIPPED_DIR, materialise_base_model

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    toy_cfg = smk.params.toy
    # The shipped weights are versioned by the rule's code param (by content).
    log.info("toy base model: %s", "rebuild" if toy_cfg["rebuild"] else SHIPPED_DIR)
    materialise_base_model(smk.output.model, toy_cfg, shipped_dir=SHIPPED_DIR)
    log.info("toy base model ready in %s", smk.output.model)
