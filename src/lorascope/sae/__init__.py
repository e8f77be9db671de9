"""Stage sae (workflow/rules/sae.smk: rules `train_sae`, `sae_features`).

Consumes: `activations/manifest.json` + shards (and `data/sft.parquet` for
context tokens).
Produces: `sae/model/` (SAELens on-disk format), `sae/metrics.json`,
`features/sae/{features,topk,contexts}.parquet`.

- `config`: the `sae:` section as a dataclass (defaults and bounds: the schema).
- `architectures`: one builder per `sae.architecture` (BatchTopK, TopK,
  JumpReLU, Matryoshka BatchTopK) making its SAELens training config.
- `training`: training with SAELens's SAETrainer on our shard stream.
- `evaluation`: FVU, L0 and dead latents of the saved SAE.
- `features`: the alive latents as features, from the shards alone.
"""

__all__ = ["architectures", "config", "evaluation", "features", "training"]
