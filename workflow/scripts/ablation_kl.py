"""Rule kl_ablation: KL(full LoRA || ablated) per layer, component and group."""

from lorascope.ablation.kl import ablation_kl, build_ablations
from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.ablation.setup import kl_sequences, load_lora, summarise
from lorascope.core.io import atomic_path, to_markdown, write_parquet
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

TITLES = {
    "kl_layers": "KL(full LoRA || LoRA without every component of one layer)",
    "kl_components": (
        "KL(full LoRA || LoRA without one component; at rank > 1 one direction, "
        "module_kl_*: its whole module)"
    ),
    "kl_groups": "KL(full LoRA || LoRA without all attention / all MLP components)",
}

with script_logging(smk) as log:
    config = smk.params.config
    cfg = config["ablation"]
    model, _, table = load_lora(
        config, smk.params.base, smk.input.adapter, smk.input.components
    )
    sequences = kl_sequences(config, smk.input.sft)
    ablations = build_ablations(table)
    log.info(
        "%d ablations x %d sequences (%d tokens), %d variants per forward",
        len(ablations), len(sequences), sum(len(s[0]) for s in sequences),
        cfg["variants_per_forward"],
    )  # fmt: skip
    with ScalarControl(lora_layers(model)) as control:
        kl_AS, tokens_S, mean_abs_C = ablation_kl(
            model,
            control,
            ablations,
            sequences,
            variants_per_forward=cfg["variants_per_forward"],
            logit_chunk=cfg["logit_chunk"],
        )
    tables = summarise(table, ablations, kl_AS, tokens_S, mean_abs_C, cfg["average"])
    for name, title in TITLES.items():
        df = tables[name.removeprefix("kl_")]
        write_parquet(df, smk.output[name])
        with atomic_path(smk.output[f"{name}_md"]) as tmp:
            tmp.write_text(f"# {title}\n\n" + to_markdown(df, "{:.4g}"))
    groups = tables["groups"]
    log.info("group KL: %s", dict(zip(groups["group"], groups["kl_mean"], strict=True)))
