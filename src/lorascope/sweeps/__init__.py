"""Stage sweeps (rules `sweep_recovery`, `sweep_persistence`,
`sweep_emergence`, wired by workflow/rules/sweeps.smk): what a sweep over
LoRA ranks, training seeds and checkpoints shows.

Consumes, per sweep member (its results root): `train/rank1/adapter/`,
`components.parquet`, `activations/manifest.json` + shards, `sae/model/`,
`features/{lora,sae}/features.parquet`, `eval/rank1/{benchmark}.parquet`;
from the shared root `eval/{base,full}/{benchmark}.parquet`; from the
reference member `autointerp/{assignments,explanations}/{kind}.parquet`.
Produces: the recovery table per member and per rank, the persistence rows
and shares, the emergence curve (paths chosen by the rules).

- `members`: the member list, artifact paths, up-front file checks.
- `recovery`: Table 1 per member and per rank (evaluation.tables' bootstrap).
- `streams`: members' shards side by side (same tokens, checked) and the
  float64 correlation sums.
- `matching`: one-to-one matching, subspace correlation, decoder cosines.
- `persistence`: the one pass and the per-feature rows.
- `tables`: shares by category and class, the emergence curve.
- `job`: one function per rule from paths; `python -m lorascope.sweeps.job`.
"""

__all__ = [
    "job",
    "matching",
    "members",
    "persistence",
    "recovery",
    "streams",
    "tables",
]
