"""What every stage shares: plumbing, the artifact formats, the decoding protocol.

Plumbing:
- `config`: validate the config against workflow/schemas/config.schema.yaml;
  `checks`: what the schema cannot express (paths, names, SAE width, keys).
- `wiring`, `codeversion`: what a rule depends on (declared config, runtime
  keys, secrets redacted; content hashes of its code), for common.smk.
- `io`: atomic writes, parquet + markdown tables, JSON, data-file checks.
- `runtime`: script logging, seeding, devices, dtypes; jobs stop when
  snakemake dies.
- `models`: load base models, tokenizers, adapters, SAEs the same way everywhere.

Artifact formats (written by one stage, read by others):
- `components`: the component table `components.parquet`, the one ordering.
- `chat`: the s1 chat format (training sequences and prompts).
- `shards`: activation shards and their verifying reader.
- `topk`, `contexts`, `feature_tables`: feature tables (features, top-k,
  contexts) built by activations and sae, read by autointerp and dashboards.
- `labels`: who made the labels (autointerp/usage.json), for every footer.

Protocol (the same question asked the same way by every stage):
- `decoding`: greedy HF generation in the s1 format.
- `grading`: grading answers against benchmark rows.

Nothing here imports a stage package.
"""

__all__ = [
    "chat",
    "checks",
    "codeversion",
    "components",
    "config",
    "contexts",
    "decoding",
    "feature_tables",
    "grading",
    "io",
    "labels",
    "models",
    "runtime",
    "shards",
    "topk",
    "wiring",
]
