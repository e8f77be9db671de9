"""Rule feature_ablation: KL of removing each SAE feature / LoRA direction, and
the KL / loss the SAE's reconstruction recovers (ablation/sae_recovered.json)."""

import json

import numpy as np
import polars as pl
import torch

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.ablation.setup import assistant_masks, kl_sequences, load_lora
from lorascope.causal.feature_effects import (
    feature_kl_table,
    lora_rows,
    sae_recovered,
    sae_rows,
)
from lorascope.causal.feature_kl import SaeMap, feature_ablation_kl
from lorascope.core.io import atomic_path, to_markdown, write_parquet
from lorascope.core.runtime import script_logging
from lorascope.core.saes import load_sae

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    config = smk.params.config
    cfg = config["ablation"]
    model, _, table = load_lora(
        config, smk.params.base, smk.input.adapter, smk.input.components
    )
    device = next(model.parameters()).device
    sae_map = SaeMap(load_sae(smk.input.sae, device=str(device)))
    sae_features = pl.read_parquet(smk.input.sae_features)
    remove_GF = np.zeros((sae_features.height, sae_map.dir_FC.shape[0]), bool)
    remove_GF[np.arange(sae_features.height), sae_features["latent"].to_numpy()] = 1
    sequences = kl_sequences(config, smk.input.sft)
    sequences = sequences[: config["causal"]["kl_sequences"] or len(sequences)]
    # The loss positions: those whose next token carries a loss label (the
    # same draw and cut as the sequences), whatever ablation.token_scope says.
    loss_scopes = []
    labelled = assistant_masks(config, smk.input.sft)[: len(sequences)]
    for (ids_T, _), labelled_T in zip(sequences, labelled, strict=True):
        loss_T = np.zeros(len(ids_T), bool)
        loss_T[:-1] = labelled_T[1:].numpy()
        loss_scopes.append(torch.from_numpy(loss_T))
    log.info(
        "%d SAE features x %d sequences (%d tokens), %d variants per forward",
        len(remove_GF), len(sequences), sum(len(s[0]) for s in sequences),
        cfg["variants_per_forward"],
    )  # fmt: skip
    with ScalarControl(lora_layers(model)) as control:
        out = feature_ablation_kl(
            model,
            control,
            sae_map,
            table,
            remove_GF,
            sequences,
            variants_per_forward=cfg["variants_per_forward"],
            logit_chunk=cfg["logit_chunk"],
            loss_scopes=loss_scopes,
        )
    df = feature_kl_table(
        [
            lora_rows(
                pl.read_parquet(smk.input.lora_features),
                pl.read_parquet(smk.input.kl_components),
            ),
            sae_rows(sae_features, out, cfg["average"]),
        ]
    )
    write_parquet(df, smk.output.table)
    recovered = sae_recovered(out, cfg["average"])
    with atomic_path(smk.output.recovered) as tmp:
        tmp.write_text(json.dumps(recovered, indent=2) + "\n")
    floor = float(df.filter(pl.col("kind") == "sae")["kl_floor"][0])
    shown = {
        k: "undefined" if recovered[k] is None else f"{recovered[k]:.4g}"
        for k in ("kl_recovered", "loss_recovered", "kl_full_zero")
    }
    zero = shown["kl_full_zero"]
    with atomic_path(smk.output.md) as tmp:
        tmp.write_text(
            "# KL of removing one SAE feature / LoRA direction\n\n"
            f"SAE reconstruction floor KL(full || reconstruction): {floor:.4g} "
            "(SAE kl_mean is relative to it; LoRA directions ablate their "
            f"component). KL(full || all scalars zeroed): {zero}; KL recovered "
            f"{shown['kl_recovered']}, loss recovered {shown['loss_recovered']} "
            "(ablation/sae_recovered.json).\n\n" + to_markdown(df, "{:.4g}")
        )
    log.info(
        "reconstruction floor KL %.4g; KL recovered %s, loss recovered %s; %d rows",
        floor, shown["kl_recovered"], shown["loss_recovered"], df.height,
    )  # fmt: skip
    for what, why in recovered["undefined"].items():
        log.warning("%s undefined: %s", what, why)
