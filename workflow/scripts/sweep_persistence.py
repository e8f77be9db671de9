"""Rule sweep_persistence: the reference member's LoRA directions and SAE
features matched in every other member
(`lorascope.sweeps.job.persistence_table`).

params: members, reference, sweep (threshold, kinds, batch_size, max_gib),
device.
"""

from lorascope.core.runtime import resolve_device, script_logging
from lorascope.sweeps.job import persistence_table

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    p, s = smk.params, smk.params.sweep
    rows = persistence_table(
        p.members,
        p.reference,
        smk.output.rows,
        smk.output.markdown,
        smk.output.shares,
        kinds=s["kinds"],
        threshold=s["threshold"],
        batch_size=s["batch_size"],
        max_gib=s["max_gib"],
        device=str(resolve_device(p.device)),
    )
    log.info("%d feature rows; matched share %.3f", rows.height, rows["matched"].mean())
