"""Rule toy_bench: one toy benchmark, drawn from the held-out pool."""

from lorascope.core.io import write_parquet
from lorascope.core.runtime import script_logging
from lorascope.toy.world import benchmark_frame_of

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    name = smk.wildcards.name
    bench = benchmark_frame_of(smk.params.toy, name)
    write_parquet(bench, smk.output.bench)
    log.info("toy benchmark %s: %d problems", name, bench.height)
