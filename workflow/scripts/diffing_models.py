"""Rule model_diff: what the rank-1 adapter captures of what full fine-tuning
changed (residual-stream shares per layer, KL per token, Table 3, contexts).
One model on the device at a time: the full fine-tune (pass 1, its states to
disk), then the base + adapter (pass 2)."""

import shutil
from pathlib import Path

from lorascope.core.io import atomic_path, to_markdown, write_parquet
from lorascope.core.models import load_causal_lm, load_lora_model
from lorascope.core.runtime import script_logging
from lorascope.diffing.job import DiffPlan, release, table3_markdown
from lorascope.diffing.passes import missing_states, store_full_states

smk = snakemake  # noqa: F821 (injected by Snakemake)
DIFF_TABLES = ("residual", "kl_layers", "table3", "contexts", "feature_pcs", "tokens")

with script_logging(smk) as log:
    inp, config = smk.input, smk.params.config
    inputs = {k: inp[k] for k in ("adapter", "components", "full", "sft")}
    inputs |= {"sae": inp.get("sae"), "sae_features": inp.get("sae_features")}
    generations = inp.get("generations")  # {engine}/full/{benchmark}.parquet
    inputs["bench"] = {
        b: str(Path(generations) / "full" / f"{b}.parquet")
        for b in smk.params.benchmarks
    }
    plan = DiffPlan.prepare(config, smk.params.base, inputs, log)
    # Pass 1's states wait here for pass 2 (not an output: removed once the
    # tables are written; after a failure they stay, and the rerun reuses
    # them when the full fine-tune, dtype and token ids are the same).
    scratch = Path(smk.output.table3).parent / "full_states.tmp"
    missing = missing_states(plan.texts, scratch, plan.state_key())
    log.info("pass 1 (full fine-tune): %d of %d sequences to run",
             len(missing), len(plan.texts))  # fmt: skip
    if missing:
        full = load_causal_lm(
            plan.full_path, revision=plan.full_revision, **plan.load_kwargs
        )
        store_full_states(full, plan.texts, scratch, log, only=missing)
        release(full)
    log.info("pass 2: base + rank-1 adapter")
    model = load_causal_lm(
        smk.params.base, revision=config["model"]["revision"], **plan.load_kwargs
    )
    tables = plan.tables(load_lora_model(model, inp.adapter).eval(), scratch)
    for name in DIFF_TABLES:
        write_parquet(tables[name], smk.output[name])
    shutil.rmtree(scratch)
    with atomic_path(smk.output.table3_md) as tmp:
        tmp.write_text(table3_markdown(tables["table3"]))
    with atomic_path(smk.output.layers_md) as tmp:
        text = to_markdown(tables["residual"], "{:.4g}")
        tmp.write_text("# Residual-stream diff per layer\n\n" + text)
    log.info("%s", table3_markdown(tables["table3"]))
