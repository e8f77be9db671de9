"""Stage causal (workflow/rules/causal.smk: rules `feature_ablation`,
`direct_effects`, `feature_accuracy`; config section `causal`).

Consumes: `data/sft.parquet`, the base model, `train/rank1/adapter/`,
`components.parquet`, `sae/model/`, `features/{lora,sae}/features.parquet`,
`ablation/kl_components.parquet`, a benchmark.
Produces: `ablation/feature_kl.{parquet,md}`, `ablation/direct_effects.parquet`,
`ablation/sae_decoder.parquet`, `ablation/feature_accuracy.{parquet,md}`.

- `feature_kl`: KL of removing SAE features from the scalars (frozen
  replacement, relative to the reconstruction floor), batched and naive.
- `feature_effects`: the feature-ablation table (LoRA directions + SAE).
- `direct_effects`: promoted / suppressed tokens (logit lens), decoder maps.
- `feature_accuracy`: accuracy with one SAE feature / component removed
  during generation (two decoder passes per step for SAE features).
"""

__all__ = ["direct_effects", "feature_accuracy", "feature_effects", "feature_kl"]
