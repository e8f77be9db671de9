"""Rule bench_prepare: one benchmark in the normalised schema.

GPQA rows are gated content: only counts are logged, never a row.
"""

from lorascope.core.io import write_parquet
from lorascope.core.runtime import script_logging
from lorascope.evaluation.benchmarks import eval_keys, load_benchmark

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    name = smk.wildcards.benchmark
    ecfg = smk.params.eval
    df = load_benchmark(
        name,
        data_files=ecfg["benchmark_files"].get(name),
        toy_dir=smk.params.toy_dir,
        # Declared only where options are shuffled (eval_keys): 0 is unused.
        seed=ecfg["choice_seed"] if "choice_seed" in eval_keys(name) else 0,
        limit=ecfg["limit"],
        duplicates=ecfg["duplicate_rows"],
        snapshot=smk.params.snapshot,
    )
    write_parquet(df, smk.output.bench)
    log.info("%s: %d problems, graders %s", name, df.height, sorted(set(df["grader"])))
