"""Rule sweep_emergence: when the reference's matched features appear over
its checkpoints (`lorascope.sweeps.job.emergence_table`).

params: members, reference.
"""

from lorascope.core.runtime import script_logging
from lorascope.sweeps.job import emergence_table

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    curve, first = emergence_table(
        smk.params.members,
        smk.params.reference,
        smk.input.persistence,
        smk.output.curve,
        smk.output.features,
    )
    log.info("%d checkpoints", curve["step"].n_unique())
