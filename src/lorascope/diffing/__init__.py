"""Stage 'diffing' (workflow/rules/diffing.smk): what the rank-1 adapter
captures of what full fine-tuning changed (issue 32).

Consumes the base model, the rank-1 adapter (`train/rank1/adapter`), the full
fine-tune (`train/full/model`), the SFT set, the full model's benchmark
generations (`eval/generations/{engine}/full/`), the component table and the
SAE. Produces, under `diffing/`: per-layer residual-stream shares
(`residual.parquet`), per-layer KL of the base with Δh_full patched in
(`kl_layers.parquet`), "Table 3: what rank-1 captures" (`table3.{parquet,md}`)
the contexts where the full fine-tune differs most from the rank-1
adapter (`contexts.parquet`), KL per token (`tokens.parquet`), and each
LoRA direction's / SAE feature's cosine with Δh_full's top principal
directions at its layer (`feature_pcs.parquet`, for the dashboards). Rule
`model_diff` (`lorascope.diffing.passes`); the checks that the two models
can be compared are `lorascope.diffing.checks`.
"""

__all__ = ["checks", "job", "passes", "principal", "states", "subspaces", "tables"]
