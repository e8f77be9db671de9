"""Stage ablation (workflow/rules/ablation.smk: rule `kl_ablation`), and the
scalar control the later stages `steering` and `causal` build on.

Consumes: `data/sft.parquet`, the base model, `train/rank1/adapter/`,
`components.parquet`.
Produces: `ablation/kl_{layers,components,groups}.{parquet,md}`.

- `scalar_control`: hooks that scale, shift or record LoRA scalars per row.
- `kl`: KL(full LoRA || ablated) with batched, prefix-reusing forwards.
- `setup`: loading, the KL sequences, the result tables.
- `generation`: greedy benchmark generations, graded, backtracking counted
  (shared by the steering sweep and feature accuracy).
"""

__all__ = ["generation", "kl", "scalar_control", "setup"]
