"""Rule feature_attribution: every feature's estimated effect on each target,
and the estimates against exact removal on the validation sequences."""

import time

import polars as pl
import torch

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.ablation.setup import load_lora
from lorascope.attribution.checks import sequences_problem
from lorascope.attribution.exact import exact_effects
from lorascope.attribution.gradients import attribute, needs_checkpoint
from lorascope.attribution.tables import (
    attribution_table,
    exact_frame,
    validation_sequences,
    validation_table,
)
from lorascope.attribution.targets import load_targets
from lorascope.causal.feature_kl import SaeMap
from lorascope.core.io import atomic_path, to_markdown, write_parquet
from lorascope.core.runtime import script_logging
from lorascope.core.saes import load_sae

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    config = smk.params.config
    att_cfg, ab = config["attribution"], config["ablation"]
    n_seq = att_cfg["n_sequences"] or ab["n_sequences"]
    if problem := sequences_problem(config):
        raise ValueError(problem)
    model, tokenizer, table = load_lora(
        config, smk.params.base, smk.input.adapter, smk.input.components
    )
    seqs = load_targets(config, smk.input.sft, tokenizer, n_seq)
    device = next(model.parameters()).device
    sae_map = SaeMap(load_sae(smk.input.sae, device=str(device)))
    sae_features = pl.read_parquet(smk.input.sae_features)
    lora_features = pl.read_parquet(smk.input.lora_features)
    targets = att_cfg["targets"]
    latents = sae_features["latent"].to_numpy()
    n_val = att_cfg["validate_sequences"]

    def clock() -> float:
        """CPU time of this process on CPU (a shared machine's load does not
        count), wall time after a sync on a GPU."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return time.process_time()

    with ScalarControl(lora_layers(model)) as control:
        start = clock()
        longest = max(len(s.ids_T) for s in seqs)
        ckpt = needs_checkpoint(model, longest)
        log.info("%d sequences (longest %d tokens), layer checkpointing %s",
                 len(seqs), longest, ckpt)  # fmt: skip
        att = attribute(
            model, control, sae_map, seqs, targets,
            ig_steps=att_cfg["ig_steps"], checkpoint_layers=ckpt,
        )  # fmt: skip
        t_att = clock() - start
        val_idx = validation_sequences(att, n_val)
        start = clock()
        exact = exact_effects(
            model, control, sae_map, table, [seqs[i] for i in val_idx], targets,
            latents,
            variants_per_forward=ab["variants_per_forward"],
        )  # fmt: skip
        t_exact = clock() - start
    boot = dict(n_boot=att_cfg["bootstrap_samples"], seed=config["seed"])
    df = attribution_table(lora_features, sae_features, att, **boot)
    write_parquet(df, smk.output.table)
    pairs = exact_frame(att, exact, latents, val_idx)
    write_parquet(pairs, smk.output.exact)
    val = validation_table(pairs, trust_rho=att_cfg["trust_rho"], **boot)
    write_parquet(val, smk.output.validation)
    # Per sequence, the estimate for every unit against exact removal of
    # every component and SAE feature (the same forwards as the KL tables).
    ratio = (t_att / len(seqs)) / (t_exact / n_val)
    kind_of_time = "wall" if device.type == "cuda" else "CPU"
    cost = (
        f"Cost per sequence: attribution {t_att / len(seqs):.3g} s (every unit, "
        f"{len(targets)} targets, ig_steps {att_cfg['ig_steps']}), exact removal "
        f"{t_exact / n_val:.3g} s ({table.height} components + {len(latents)} SAE "
        f"features): ratio {ratio:.3g} ({kind_of_time} time on {device})."
    )
    log.info(cost)
    counts = ", ".join(
        f"{t}: {int((att.positions_KS[k] > 0).sum())} sequences, "
        f"{int(att.positions_KS[k].sum())} positions"
        for k, t in enumerate(targets)
    )
    with atomic_path(smk.output.md) as tmp:
        tmp.write_text(
            "# Attribution: estimated effect of removing each feature\n\n"
            f"{len(seqs)} training sequences ({counts}). `effect` = estimated "
            "change of the target (log-prob targets: mean log-prob; loss: mean "
            "NLL) when the feature is removed; SAE features relative to the SAE "
            "reconstruction (floor), LoRA directions zero their component. "
            "Brackets: bootstrap over sequences.\n\n"
            + to_markdown(df.filter(pl.col("rank") <= 20), "{:.4g}")
        )
    with atomic_path(smk.output.validation_md) as tmp:
        tmp.write_text(
            "# Attribution against exact removal\n\n"
            f"{n_val} attribution sequences (those with the most targets: "
            f"{', '.join(map(str, val_idx))}); units whose estimate or exact "
            "effect is not 0. `trustworthy`: the Spearman interval's lower end "
            f">= {att_cfg['trust_rho']}.\n\n{cost}\n\n" + to_markdown(val, "{:.3g}")
        )
    for row in val.iter_rows(named=True):
        log.info(
            "%s %s: rho %.3f [%.3f, %.3f] over %d units", row["kind"], row["target"],
            row["rho"], row["rho_lo"], row["rho_hi"], row["n_units"],
        )  # fmt: skip
