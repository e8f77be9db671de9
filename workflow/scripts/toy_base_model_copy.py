"""Rule toy_base_model with toy.rebuild false: copy the shipped toy base model.

Its own script so that its code version (code_of) covers the copy and the
check only, not the pretraining and grading a rebuild runs.
"""

from lorascope.core.runtime import script_logging
from lorascope.toy.world import SHIPPED_DIR, copy_base_model

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    if smk.params.toy["rebuild"]:
        raise ValueError(
            "toy.rebuild is true: rule toy_base_model runs toy_base_model.py"
        )
    # The shipped weights are versioned by the rule's code param (by content).
    log.info("toy base model: copy of %s", SHIPPED_DIR)
    copy_base_model(smk.output.model, shipped_dir=SHIPPED_DIR)
    log.info("toy base model ready in %s", smk.output.model)
