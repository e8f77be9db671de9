"""Stage groundtruth (workflow/rules/groundtruth.smk: rule `ground_truth`),
the embedded toy world only.

Consumes: `data/sft.parquet`, the base model, `train/rank1/adapter/`,
`activations/manifest.json` (which MLP neurons), `sae/model/`,
`features/{kind}/features.parquet`, `autointerp/explanations/{kind}.parquet`,
`eval/rank1/{benchmark}.parquet` (the rank-1 LoRA's generations).
Produces: `groundtruth/{scores,matched,summary,tokens}.parquet` (+ .md for
matched and summary).

- `tokens`: the scored tokens and their roles (`lorascope.toy.roles`).
- `values`: every feature's activation on them (one model pass, SAE encode).
- `metrics`: AUROC, best F1, one-to-one matching, explanation naming.
- `tables`: the tables from those.
- `run`: the job from loaded inputs to the tables.
"""

__all__ = ["metrics", "run", "tables", "tokens", "values"]
