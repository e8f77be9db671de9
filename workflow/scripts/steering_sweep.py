"""Rule steering_sweep: push components / SAE features by alpha; measure behaviour.
With steering.models beyond rank1, the same pushes on the base model and the
full fine-tune (lorascope.steering.models), one model loaded at a time."""

import polars as pl

from lorascope.ablation.kl import PrefixRunner
from lorascope.ablation.scalar_control import ScalarControl, check_table, lora_layers
from lorascope.ablation.setup import assistant_masks, kl_sequences, load_lora
from lorascope.core.io import atomic_path, to_markdown, write_parquet
from lorascope.core.models import load_causal_lm, load_lora_model, resolve_model_dir
from lorascope.core.runtime import script_logging
from lorascope.core.saes import load_sae
from lorascope.steering.models import sweep_models, transfer_summary
from lorascope.steering.residual import residual_targets
from lorascope.steering.sweep import collect_scalars, sweep
from lorascope.steering.targets import (
    choose_targets,
    make_targets,
    sae_typical_activation,
)

smk = snakemake  # noqa: F821 (injected by Snakemake)


def load_full(config):
    """The full fine-tune with the rank-1 adapter attached (to be silenced)."""
    path, revision = resolve_model_dir(smk.input.full)
    m, device = config["model"], config["ablation"]["device"] or config["device"]
    full = load_causal_lm(path, dtype=m["dtype"], revision=revision, device=device,
                          attn_implementation=m["attn_implementation"])  # fmt: skip
    full = load_lora_model(full, smk.input.adapter).eval()
    check_table(table, full)
    return full


with script_logging(smk) as log:
    config = smk.params.config
    st, ev = config["steering"], config["eval"]
    model, tokenizer, table = load_lora(
        config, smk.params.base, smk.input.adapter, smk.input.components
    )
    kl = pl.read_parquet(smk.input.kl_components)
    explanations = None
    if "explanations" in smk.input.keys():
        features = pl.read_parquet(
            smk.input.sae_features, columns=["feature", "latent"]
        )
        explanations = pl.read_parquet(smk.input.explanations).join(
            features, on="feature"
        )
    sae_kl = None
    if "feature_kl" in smk.input.keys():
        sae_kl = pl.read_parquet(smk.input.feature_kl).filter(pl.col("kind") == "sae")
    chosen = choose_targets(st, kl, explanations, sae_kl)
    sequences = kl_sequences(config, smk.input.sft)[: st["kl_sequences"]]
    masks = assistant_masks(config, smk.input.sft)[: st["kl_sequences"]]
    bench = pl.read_parquet(smk.input.bench).head(st["limit"] or None).to_dicts()
    with ScalarControl(lora_layers(model)) as control:
        sae = typical_F = None
        if any(kind == "sae" for kind, _, _ in chosen):
            sae = load_sae(smk.input.sae)
            scalars_NC = collect_scalars(PrefixRunner(model, control), sequences)
            typical_F = sae_typical_activation(sae, scalars_NC)
        targets = make_targets(chosen, kl, sae, typical_F)
        if st["residual"]:
            targets += residual_targets(
                targets, table, model, PrefixRunner(model, control), sequences,
                unit=st["residual_direction"] == "unit",
            )  # fmt: skip
    log.info("targets: %s", [(t.label, t.selection) for t in targets])

    def run_sweep(model, control):
        return sweep(
            model, tokenizer, control, targets, st["alphas"], bench, sequences,
            table["layer"].to_numpy(),
            words=st["backtrack_words"],
            max_new_tokens=st["max_new_tokens"] or ev["max_new_tokens"],
            batch_size=st["batch_size"] or ev["batch_size"],
            logit_chunk=config["ablation"]["logit_chunk"],
            system=config["data"]["system_prompt"],
            positions=st["positions"], masks=masks,
            average=config["ablation"]["average"],
            fallback=ev["grade_without_answer_marker"],
        )  # fmt: skip

    held = [model]
    del model  # sweep_models drops it before loading the full fine-tune
    df = sweep_models(st["models"], held, lambda: load_full(config), run_sweep, log)
    write_parquet(df, smk.output.sweep)
    with atomic_path(smk.output.sweep_md) as tmp:
        shown = df.drop(pl.selectors.starts_with("sample_"))  # per-problem lists
        text = "# Steering sweep\n\n" + to_markdown(shown, "{:.4g}")
        if len(st["models"]) > 1:
            summary = transfer_summary(df, ev["bootstrap_samples"], config["seed"])
            text += ("\n\n## Direction transfer: the strongest push minus "
                     "unsteered, per model (95% paired bootstrap over problems)"
                     "\n\n")  # fmt: skip
            text += to_markdown(summary, "{:.4g}")
        tmp.write_text(text)
