"""Rule sft_dataset: load the s1K-1.1-schema rows and tokenise them (s1 format)."""

from lorascope.core.io import write_json, write_parquet
from lorascope.core.models import load_tokenizer
from lorascope.core.runtime import script_logging
from lorascope.data.sft import load_rows, tokenise

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    data_cfg = smk.params.data
    toy = smk.input.toy[0] if smk.input.toy else None
    snapshot = smk.input.snapshot[0] if smk.input.snapshot else None
    rows = load_rows(data_cfg, toy_parquet=toy, snapshot=snapshot)
    tokenizer = load_tokenizer(smk.params.base, smk.params.model["revision"])
    df, stats = tokenise(rows, tokenizer, data_cfg)
    write_parquet(df, smk.output.sft)
    write_json(stats, smk.output.stats)
