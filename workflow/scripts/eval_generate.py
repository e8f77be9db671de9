"""Rule eval_generate: greedy completions of every benchmark for the variants
one generation job serves (one vLLM engine, or one hf variant)."""

from pathlib import Path

import polars as pl

from lorascope.core.io import atomic_path
from lorascope.core.models import load_tokenizer
from lorascope.core.runtime import script_logging, seed_everything
from lorascope.evaluation.generation import generate_benchmarks

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    seed_everything(smk.params.seed)
    benchmarks = {Path(p).stem: pl.read_parquet(p) for p in smk.input.bench}
    # Prompts always come from the base tokenizer: every variant sees the
    # same token ids (the full fine-tune shares the base vocabulary).
    tokenizer = load_tokenizer(smk.params.base, smk.params.model.get("revision"))
    frames = generate_benchmarks(
        dict(smk.params.models),
        tokenizer,
        benchmarks,
        smk.params.eval,
        smk.params.model,
        device=smk.params.device,
        seed=smk.params.seed,
        system=smk.params.system_prompt,
    )
    with atomic_path(smk.output.generations, is_dir=True) as tmp:
        for variant, by_bench in frames.items():
            (tmp / variant).mkdir(parents=True, exist_ok=True)
            for name, df in by_bench.items():
                df.write_parquet(tmp / variant / f"{name}.parquet")
                log.info(
                    "%s/%s: %d completions, %.1f%% truncated, mean %.0f tokens",
                    variant,
                    name,
                    df.height,
                    100 * df["truncated"].mean(),
                    df["n_generated_tokens"].mean(),
                )
