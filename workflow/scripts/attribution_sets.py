"""Rule behaviour_sets: the top features per target removed (necessity) or
added alone to the base model (sufficiency) during generation, against
random sets of features that fire."""

import polars as pl

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.ablation.setup import load_lora
from lorascope.attribution.sets import choose_sets, run_sets, sets_table
from lorascope.causal.feature_accuracy import fitting_batch
from lorascope.causal.feature_kl import SaeMap
from lorascope.core.io import atomic_path, to_markdown, write_parquet
from lorascope.core.runtime import script_logging
from lorascope.core.saes import load_sae

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    config = smk.params.config
    att, ev = config["attribution"], config["eval"]
    # The sets first: a set size above the features that fire fails before
    # the model loads.
    sets = choose_sets(
        pl.read_parquet(smk.input.attribution), att["set_targets"], att["set_size"],
        att["random_sets"], config["seed"], where=smk.input.attribution,
    )  # fmt: skip
    model, tokenizer, _ = load_lora(
        config, smk.params.base, smk.input.adapter, smk.input.components
    )
    device = next(model.parameters()).device
    sae_map = SaeMap(load_sae(smk.input.sae, device=str(device)))
    bench = pl.read_parquet(smk.input.bench).head(att["sets_limit"] or None)
    log.info(
        "%s: %d problems x %d generations", smk.params.benchmark, bench.height,
        len(sets),
    )  # fmt: skip
    max_new = att["sets_max_new_tokens"] or ev["max_new_tokens"]
    batch = att["sets_batch_size"] or fitting_batch(
        model, max_new, bench.height, fallback=ev["batch_size"]
    )
    log.info("batch %d prompts per generate call", batch)
    with ScalarControl(lora_layers(model)) as control:
        runs = run_sets(
            model, tokenizer, control, sae_map, sets, bench.to_dicts(),
            words=att["backtrack_tokens"],
            max_new_tokens=max_new, batch_size=batch,
            system=config["data"]["system_prompt"],
            fallback=ev["grade_without_answer_marker"],
        )  # fmt: skip
    df = sets_table(sets, runs, n_boot=att["bootstrap_samples"], seed=config["seed"])
    write_parquet(df, smk.output.table)
    top = df.filter(pl.col("set") == "top").drop("latents")
    with atomic_path(smk.output.md) as tmp:
        tmp.write_text(
            f"# Behaviour sets ({smk.params.benchmark}, {bench.height} problems)\n\n"
            f"Top {att['set_size']} SAE features per target by attribution support. "
            "Necessity: removed from the SAE reconstruction (against `floor`); "
            "sufficiency: only their part added to the base model (against "
            f"`base`). Random control: {att['random_sets']} sets of the same size "
            "from the features that fire; `vs_random` = delta minus their mean "
            "delta. Brackets: paired bootstrap over problems.\n\n"
            + to_markdown(top, "{:.4g}")
            + "\n\n## Every generation\n\n"
            + to_markdown(df.drop("latents"), "{:.4g}")
        )
    for row in top.iter_rows(named=True):
        log.info(
            "%s %s %s: delta %+.3f [%+.3f, %+.3f], vs random %+.3f", row["target"],
            row["test"], row["metric"], row["delta"], row["delta_lo"],
            row["delta_hi"], row["vs_random"],
        )  # fmt: skip
