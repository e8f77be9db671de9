"""Stage attribution (workflow/rules/attribution.smk: rules `feature_attribution`,
`behaviour_sets`; config section `attribution`). Issue 28, beyond the paper.

Consumes: `data/sft.parquet`, the base model, `train/rank1/adapter/`,
`components.parquet`, `sae/model/`, `features/{lora,sae}/features.parquet`,
a benchmark.
Produces: `attribution/features.{parquet,md}` (every LoRA direction and SAE
feature x target: first-order effect of removing it, with bootstrap
intervals over sequences), `attribution/exact.parquet` and
`attribution/validation.{parquet,md}` (the estimates against exact removal
on the validation sequences), `attribution/sets.{parquet,md}` (top-n
features per target removed / added alone during generation, against random
sets of features that fire).

- `targets`: the target metrics (log-prob of backtracking tokens, of the
  answer tokens, the training loss) and the positions they read.
- `gradients`: activation x gradient for every component and SAE latent in
  one forward and one backward per target (attribution patching).
- `exact`: the same removals done exactly, with the causal stage's edits and
  prefix reuse (`lorascope.ablation.kl.PrefixRunner`).
- `tables`: the attribution and validation tables.
- `sets`: behaviour sets, necessity / sufficiency during generation with the
  causal stage's two-pass decoder hook, random-set control.
"""

__all__ = ["exact", "gradients", "sets", "tables", "targets"]
