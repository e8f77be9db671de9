"""Stage data (workflow/rules/data.smk, rule `sft_dataset`).

Consumes: the SFT rows in the s1K-1.1 schema (hub id, local parquet/json, or
`toy/s1k.parquet`) and the base model's tokenizer.
Produces: `data/sft.parquet` (doc, input_ids, labels: -100 outside the
assistant turn), `data/sft_stats.json`.

- `sft`: load the rows, format them the s1 way, tokenise, count.
"""

__all__ = ["sft"]
