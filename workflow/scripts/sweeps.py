"""Rules sweep_recovery, sweep_persistence, sweep_emergence: the members of a
sweep compared (lorascope.sweeps.job, one function per rule)."""

from lorascope.core.runtime import script_logging
from lorascope.sweeps import job

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    p, out = smk.params, smk.output
    common = dict(members=list(p.members), reference=p.reference)
    if p.job == "recovery":
        shared_root = p.members[0]["root"]  # the default member's: the run's root
        table = job.recovery_table(
            **common,
            shared_root=shared_root,
            benchmarks=list(p.benchmarks),
            out_parquet=out.table,
            out_md=out.md,
            n_boot=p.eval["bootstrap_samples"],
            ci=p.eval["ci"],
            seed=p.seed,
        )
    elif p.job == "persistence":
        table = job.persistence_table(
            **common,
            out_parquet=out.table,
            out_md=out.md,
            out_shares=out.shares,
            kinds=list(p.kinds),
            threshold=p.threshold,
        )
    else:
        table, _ = job.emergence_table(
            **common,
            persistence=smk.input.persistence,
            out_curve=out.curve,
            out_features=out.features,
        )
    log.info("%s: %d rows", p.job, table.height)
