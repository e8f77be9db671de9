"""Rule eval_summary: per-benchmark accuracy and truncation of one variant."""

from pathlib import Path

import polars as pl

from lorascope.core.grading import summarise
from lorascope.core.io import write_json
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    frames = {Path(p).stem: pl.read_parquet(p) for p in smk.input.samples}
    summary = {"variant": smk.wildcards.variant, "benchmarks": summarise(frames)}
    write_json(summary, smk.output.summary)
    for name, s in summary["benchmarks"].items():
        log.info("%s: accuracy %.4f over %d", name, s["accuracy"], s["n"])
