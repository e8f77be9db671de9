"""Stage evaluation (workflow/rules/evaluation.smk: rules `bench_prepare`,
`eval_generate`, `eval_grade`, `eval_summary`, `eval_table`).

Consumes: benchmark sources (hub or local files, `toy/bench/*.parquet`), the
base model, `train/rank1/adapter/`, `adapters/*/`, `train/full/model/`.
Produces: `data/bench/{benchmark}.parquet`, `eval/generations/{engine}/`,
`eval/{variant}/{benchmark}.parquet`, `eval/{variant}/summary.json`,
`tables/table{1,2}.{parquet,md}`.

- `benchmarks`: registry and loaders, normalised to one schema.
- `engines`: which variants each generation job serves;
- `generation`: one generation job (hf per variant, or vLLM engines);
  `vllm_engine`: the vLLM backend; `job` (`python -m lorascope.evaluation`):
  the command rule `eval_generate` runs, in the backend's interpreter.
- `tables`: Tables 1 and 2 with paired bootstrap intervals.
Grading and greedy decoding are shared with steering: `lorascope.core`.
"""

__all__ = ["benchmarks", "engines", "generation", "job", "tables", "vllm_engine"]
