"""Rule toy_data: the toy SFT set (s1K-1.1 columns) and the toy benchmarks."""

from lorascope.core.io import write_parquet
from lorascope.core.runtime import script_logging
from lorascope.toy.world import benchmark_frames, sft_set

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    toy_cfg = smk.params.toy
    benches = benchmark_frames(toy_cfg)
    sft = sft_set(toy_cfg, benches)
    n_slipped = sum("\nWait, " in t for t in sft["deepseek_thinking_trajectory"])
    log.info("toy SFT set: %d rows, %d with a slip", sft.height, n_slipped)
    write_parquet(sft, smk.output.sft)
    for name, path in zip(smk.params.names, smk.output.bench, strict=True):
        write_parquet(benches[name], path)
        log.info("toy benchmark %s: %d problems", name, benches[name].height)
