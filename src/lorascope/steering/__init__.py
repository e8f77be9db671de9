"""Stage steering (workflow/rules/steering.smk: rule `steering_sweep`).

Consumes: `data/sft.parquet`, the base model, `train/rank1/adapter/`,
`components.parquet`, `ablation/kl_components.parquet`, a benchmark, and
optionally `sae/model/`, SAE explanations and the feature KL.
Produces: `steering/sweep.{parquet,md}`.

- `targets`: what the sweep pushes (components, SAE features).
- `sweep`: the sweep itself (KL, backtracking, accuracy per strength).
- `apply`: switching a shift on at all or only generated positions.
- `residual`: lora_A directions injected into the residual stream.
"""

__all__ = ["apply", "residual", "sweep", "targets"]
