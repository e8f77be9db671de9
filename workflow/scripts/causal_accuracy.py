"""Rule feature_accuracy: benchmark accuracy with the top SAE features / components
removed during generation."""

import polars as pl

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.ablation.setup import load_lora
from lorascope.causal.feature_accuracy import (
    accuracy_table,
    choose_variants,
    fitting_batch,
    run_variants,
)
from lorascope.causal.feature_kl import SaeMap
from lorascope.core.io import atomic_path, to_markdown, write_parquet
from lorascope.core.runtime import script_logging
from lorascope.core.saes import load_sae

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    config = smk.params.config
    causal, ev = config["causal"], config["eval"]
    model, tokenizer, table = load_lora(
        config, smk.params.base, smk.input.adapter, smk.input.components
    )
    device = next(model.parameters()).device
    sae_map = SaeMap(load_sae(smk.input.sae, device=str(device)))
    variants = choose_variants(
        pl.read_parquet(smk.input.feature_kl),
        pl.read_parquet(smk.input.kl_components),
        causal["accuracy_top_n"],
    )
    bench = pl.read_parquet(smk.input.bench).head(causal["accuracy_limit"] or None)
    log.info(
        "%s: %d problems x %d variants (%s)", smk.params.benchmark, bench.height,
        len(variants), ", ".join(v.name for v in variants),
    )  # fmt: skip
    max_new = causal["accuracy_max_new_tokens"] or ev["max_new_tokens"]
    # Two KV caches per prompt: eval.batch_size does not fit at 32B (issue 31).
    batch = causal["accuracy_batch_size"] or fitting_batch(
        model, max_new, bench.height, fallback=ev["batch_size"]
    )
    log.info("batch %d prompts per generate call", batch)
    with ScalarControl(lora_layers(model)) as control:
        correct, stats = run_variants(
            model, tokenizer, control, sae_map, variants, bench.to_dicts(),
            words=config["steering"]["backtrack_words"],
            max_new_tokens=max_new, batch_size=batch,
            system=config["data"]["system_prompt"],
            fallback=ev["grade_without_answer_marker"],
        )  # fmt: skip
    df = accuracy_table(
        variants, correct, stats, smk.params.benchmark,
        n_boot=ev["bootstrap_samples"], seed=config["seed"],
    )  # fmt: skip
    write_parquet(df, smk.output.table)
    with atomic_path(smk.output.md) as tmp:
        tmp.write_text(
            f"# Accuracy with one feature or component removed ({smk.params.benchmark})"
            "\n\nGreedy generations (HF backend). SAE features are removed from "
            "the SAE reconstruction of the scalars and compared with it (`floor`); "
            "components are ablated (scalar zeroed) and compared with the full "
            "LoRA. `delta` = accuracy - the reference's; brackets: 95% paired "
            "bootstrap intervals over problems.\n\n" + to_markdown(df, "{:.4g}")
        )
    for row in df.iter_rows(named=True):
        log.info(
            "%s %s: accuracy %.3f (delta %+.3f [%+.3f, %+.3f])", row["kind"],
            row["id"], row["accuracy"], row["delta"], row["delta_lo"], row["delta_hi"],
        )  # fmt: skip
