"""Stage activations (workflow/rules/activations.smk: rules
`extract_activations`, `activation_features`).

Consumes: `data/sft.parquet`, the base model, `train/rank1/adapter/`,
`components.parquet`.
Produces: `activations/manifest.json` + `activations/shards/` (per-token LoRA
scalars), `features/{lora,mlp}/{features,topk,contexts}.parquet`.

- `hooks`: forward hooks capturing LoRA scalars and MLP neurons.
- `extraction`: the pass over the SFT set, shard by shard, with top-k.
- `shard_writer`: the shard plan and atomic, resumable shard writes.
- `populations`: which features the tables keep (modules, dominant sign,
  real activations only, too few contexts marked).
The shard format and reader, top-k and context tables: `lorascope.core`.
"""

__all__ = ["extraction", "hooks", "populations", "shard_writer"]
