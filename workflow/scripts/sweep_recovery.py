"""Rule sweep_recovery: Table 1 per sweep member and per rank
(`lorascope.sweeps.job.recovery_table`).

params: members (the member dicts: tag, rank, seed, step, root), reference
(the default member's tag), shared_root (the run's root: base and full
evaluations), benchmarks, eval (bootstrap_samples, ci), seed.
"""

from lorascope.core.runtime import script_logging
from lorascope.sweeps.job import recovery_table

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    p = smk.params
    table = recovery_table(
        p.members,
        p.reference,
        p.shared_root,
        p.benchmarks,
        smk.output.table,
        smk.output.markdown,
        n_boot=p.eval["bootstrap_samples"],
        ci=p.eval["ci"],
        seed=p.seed,
    )
    log.info(
        "recovery of %d members on %d benchmarks",
        len(p.members),
        table["benchmark"].n_unique(),
    )
