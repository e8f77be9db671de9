"""What every stage shares: plumbing, the artifact formats, the decoding protocol.

Plumbing:
- `config`: validate the config against workflow/schemas/config.schema.yaml
  (what the schema cannot express: `lorascope.core.checks`).
- `io`: atomic writes, parquet + markdown tables, JSON, data-file checks.
- `runtime`: script logging, seeding, devices, dtypes.
- `processes`: a job stops, with its children, when the snakemake that
  started it dies (even before the job got going), and commits nothing then.
- `models`: load base models, tokenizers and adapters the same way everywhere;
  `saes`: load a saved SAE; `finite`: refuse weights or activations holding
  NaN/Inf, naming the file, tensor and rows; `lean_lora`: PEFT's LoRA
  forward without its bookkeeping, the same arithmetic (`models` installs it).

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

Nothing here imports a stage package (nor `lorascope.workflow`, the
Snakefile machinery).
"""

__all__ = [
    "chat",
    "components",
    "config",
    "contexts",
    "decoding",
    "feature_tables",
    "finite",
    "grading",
    "io",
    "labels",
    "lean_lora",
    "models",
    "processes",
    "runtime",
    "saes",
    "shards",
    "topk",
]
