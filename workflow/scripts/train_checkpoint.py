"""Rule sweep_checkpoint: a trained member's adapter saved at one step, as a
sweep member of its own (lorascope.train.steps)."""

from lorascope.core.runtime import script_logging
from lorascope.train.steps import export_step

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    out = export_step(smk.input.adapter, smk.params.step, smk.output.adapter)
    log.info("adapter of %s at step %d -> %s", smk.input.adapter, smk.params.step, out)
