"""Rule eval_grade: grade one variant's completions on one benchmark."""

from pathlib import Path

import polars as pl

from lorascope.core.grading import grade_frame
from lorascope.core.io import write_parquet
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    variant, name = smk.wildcards.variant, smk.wildcards.benchmark
    gen_path = Path(smk.input.generations) / variant / f"{name}.parquet"
    if not gen_path.exists():
        raise FileNotFoundError(f"{gen_path}: no generations for {variant}/{name}")
    bench, gens = pl.read_parquet(smk.input.bench), pl.read_parquet(gen_path)
    df = grade_frame(bench, gens, smk.params.fallback, smk.params.timeout_s)
    write_parquet(df, smk.output.samples)
    log.info(
        "%s/%s: accuracy %.4f (%d/%d), %d unparsed, %d without answer marker, "
        "%d grading timeouts",
        variant,
        name,
        df["correct"].mean(),
        df["correct"].sum(),
        df.height,
        df["extracted"].null_count(),
        (df["graded_from"] != "answer").sum(),
        df["grade_timed_out"].sum(),
    )
