"""Rule toy_sft: the toy SFT set (s1K-1.1 columns), outside the held-out pool."""

from lorascope.core.io import write_parquet
from lorascope.core.runtime import script_logging
from lorascope.toy.world import sft_set

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    sft = sft_set(smk.params.toy)
    n_slipped = sum("\nWait, " in t for t in sft["deepseek_thinking_trajectory"])
    log.info("toy SFT set: %d rows, %d with a slip", sft.height, n_slipped)
    write_parquet(sft, smk.output.sft)
