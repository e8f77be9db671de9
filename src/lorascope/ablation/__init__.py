"""Stage ablation (workflow/rules/ablation.smk: rules `kl_ablation`,
`steering_sweep`).

Consumes: `data/sft.parquet`, the base model, `train/rank1/adapter/`,
`components.parquet` (steering also `ablation/kl_components.parquet`, a
benchmark, and optionally `sae/model/` and SAE explanations).
Produces: `ablation/kl_{layers,components,groups}.{parquet,md}`,
`steering/sweep.{parquet,md}`.

- `scalar_control`: hooks that scale, shift or record LoRA scalars per row.
- `kl`: KL(full LoRA || ablated) with batched, prefix-reusing forwards.
- `setup`: loading, the KL sequences, the result tables.
- `steering_targets`, `steering`: what the sweep pushes, and the sweep.
- `steering_apply`: switching a shift on at all or only generated positions.
- `residual_steering`: lora_A directions injected into the residual stream.
"""

__all__ = [
    "kl",
    "residual_steering",
    "scalar_control",
    "setup",
    "steering",
    "steering_apply",
    "steering_targets",
]
