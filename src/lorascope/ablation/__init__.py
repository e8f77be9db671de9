"""Stage ablation (workflow/rules/ablation.smk: rules `kl_ablation`,
`steering_sweep`, `feature_ablation`, `direct_effects`, `feature_accuracy`).

Consumes: `data/sft.parquet`, the base model, `train/rank1/adapter/`,
`components.parquet` (steering also `ablation/kl_components.parquet`, a
benchmark, and optionally `sae/model/`, SAE explanations and the feature
KL); feature ablation and direct effects also `sae/model/` and
`features/{lora,sae}/features.parquet`.
Produces: `ablation/kl_{layers,components,groups}.{parquet,md}`,
`steering/sweep.{parquet,md}`, `ablation/feature_kl.{parquet,md}`,
`ablation/direct_effects.parquet`, `ablation/sae_decoder.parquet`,
`ablation/feature_accuracy.{parquet,md}` (rule `feature_accuracy`).

- `scalar_control`: hooks that scale, shift or record LoRA scalars per row.
- `kl`: KL(full LoRA || ablated) with batched, prefix-reusing forwards.
- `setup`: loading, the KL sequences, the result tables.
- `steering_targets`, `steering`: what the sweep pushes, and the sweep.
- `steering_apply`: switching a shift on at all or only generated positions.
- `residual_steering`: lora_A directions injected into the residual stream.
- `feature_kl`: KL of removing SAE features from the scalars (frozen
  replacement, relative to the reconstruction floor), batched and naive.
- `feature_effects`: the feature-ablation table (LoRA directions + SAE).
- `direct_effects`: promoted / suppressed tokens (logit lens), decoder maps.
- `generation`: greedy benchmark generations, graded, backtracking counted.
- `feature_accuracy`: accuracy with one SAE feature / component removed
  during generation (two decoder passes per step for SAE features).
"""

__all__ = [
    "direct_effects",
    "feature_accuracy",
    "feature_effects",
    "feature_kl",
    "generation",
    "kl",
    "residual_steering",
    "scalar_control",
    "setup",
    "steering",
    "steering_apply",
    "steering_targets",
]
