"""Rule direct_effects: tokens each residual-writing LoRA direction and SAE
feature promotes / suppresses (logit lens), and the SAE decoder fingerprints.
Reads only the tensors it needs (the adapter, the base model's final norm and
unembedding): a CPU job, whatever the model's size."""

import polars as pl
import torch

from lorascope.ablation.scalar_control import check_table
from lorascope.causal.direct_effects import (
    adapter_writes,
    decoder_fingerprint,
    direct_effects,
    read_head,
)
from lorascope.causal.feature_kl import SaeMap
from lorascope.core.contexts import token_strings
from lorascope.core.io import write_parquet
from lorascope.core.models import load_lora_skeleton, load_tokenizer
from lorascope.core.runtime import script_logging, torch_dtype
from lorascope.core.saes import load_sae

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    config = smk.params.config
    model_cfg = config["model"]
    base, revision = smk.params.base, model_cfg["revision"]
    dtype = torch_dtype(model_cfg["dtype"])
    skeleton = load_lora_skeleton(base, smk.input.adapter, model_cfg["dtype"], revision)
    table = pl.read_parquet(smk.input.components)
    check_table(table, skeleton)
    write_CD, writer_C = adapter_writes(skeleton, smk.input.adapter)
    norm_D, unembed_XD = read_head(skeleton, base, revision, dtype)
    lora = pl.read_parquet(smk.input.lora_features)
    # a direction's sign side: the negative side promotes what -b promotes
    sign_G = torch.tensor(lora["sign"].replace(0, 1).to_list(), dtype=torch.float32)
    lora_GD = write_CD[torch.tensor(lora["component"].to_list())] * sign_G[:, None]
    sae_features = pl.read_parquet(smk.input.sae_features)
    sae_map = SaeMap(load_sae(smk.input.sae))
    dir_GC = sae_map.dir_FC[torch.tensor(sae_features["latent"].to_list())]
    sae_GD = dir_GC @ write_CD
    keys = pl.concat(
        [
            lora.select(pl.lit("lora").alias("kind"), "feature", "label"),
            sae_features.select(pl.lit("sae").alias("kind"), "feature", "label"),
        ]
    )
    effects = direct_effects(
        norm_D,
        unembed_XD,
        torch.cat([lora_GD, sae_GD]),
        keys,
        token_strings(load_tokenizer(base, revision)),
        smk.params.n_tokens,
    )
    write_parquet(effects, smk.output.effects)
    write_parquet(
        decoder_fingerprint(sae_features, sae_map.dir_FC, table), smk.output.fingerprint
    )
    n_with = effects.select("kind", "feature").n_unique()
    log.info(
        "%d of %d components write the residual stream; %d features with tokens",
        int(writer_C.sum()), len(writer_C), n_with,
    )  # fmt: skip
