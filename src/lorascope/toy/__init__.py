"""Stage toy (workflow/rules/toy.smk: rules `toy_base_model`, `toy_sft`,
`toy_bench`).

The embedded stand-in world: it lets the whole DAG run on a laptop CPU in
minutes through the same code paths as the paper-scale run.
Consumes: `resources/toy/base_model/` (shipped weights) or nothing
(`toy.rebuild: true` pretrains from scratch).
Produces: `toy/base_model/` (HF dir), `toy/s1k.parquet` (s1K-1.1 schema),
`toy/bench/{name}.parquet`.

- `tokenizer`: the toy BPE tokenizer with a Qwen-style chat template.
- `tasks`: arithmetic traces with slips, benchmarks, the held-out pool.
- `textbook`: worked solutions in textbook wordings (pretraining text).
- `pretrain`: the base model's pretraining recipe.
- `world`: materialise the base model and the data sets.
- `roles`: what each character of a trace does (the ground truth): the
  generator's record and the parser for text it did not write.
"""

__all__ = ["pretrain", "roles", "tasks", "textbook", "tokenizer", "world"]
