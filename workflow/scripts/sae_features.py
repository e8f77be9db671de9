"""Rule sae_features: the alive SAE latents' features, top-k and contexts.

Encodes every token's LoRA scalars from the shards with the saved SAE (no
language-model pass); the windows around top-k tokens and around each
latent's random sample of firing tokens (activations.sample_k) are re-encoded
from the shards and checked against the streamed values by build_contexts. Only codes
above activations.min_activation count; features with fewer than
activations.min_contexts of them are marked few_contexts.
"""

from pathlib import Path

import polars as pl

from lorascope.core.contexts import build_contexts, finish_features, token_strings
from lorascope.core.io import read_json, write_parquet
from lorascope.core.models import load_tokenizer
from lorascope.core.runtime import resolve_device, script_logging
from lorascope.core.saes import load_sae
from lorascope.core.shards import open_shards
from lorascope.sae.config import SaeConfig
from lorascope.sae.features import (
    POLARITY,
    describe_population,
    doc_values_fn,
    sae_feature_tables,
)

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    cfg = SaeConfig.from_config(smk.params.config)
    act = smk.params.activations
    if act["min_contexts"] > act["top_k"]:
        raise ValueError(
            f"activations.min_contexts={act['min_contexts']} exceeds "
            f"activations.top_k={act['top_k']}: every feature would be left out"
        )
    sae = load_sae(smk.input.model, device=str(resolve_device(cfg.device)))
    alive = read_json(smk.input.metrics)["alive_latents"]
    shards = open_shards(Path(smk.input.manifest).parent)
    features, topk, sample = sae_feature_tables(
        sae,
        shards,
        alive,
        act["top_k"],
        cfg.batch_size,
        act["min_activation"],
        act["sample_k"],
    )
    sft = pl.read_parquet(smk.input.sft, columns=["doc", "input_ids"])
    docs = pl.concat([topk["doc"], *([sample["doc"]] if sample is not None else [])])
    needed = sft.filter(pl.col("doc").is_in(docs.unique().implode()))
    token_ids = dict(
        zip(needed["doc"].to_list(), needed["input_ids"].to_list(), strict=True)
    )
    contexts = build_contexts(
        topk,
        token_ids,
        token_strings(load_tokenizer(smk.params.base, smk.params.model["revision"])),
        doc_values_fn(sae, shards, alive),
        POLARITY,
        act["context_width"],
        sample=sample,
    )
    population = describe_population(len(alive), sae.cfg.d_sae, act)
    features = finish_features(features, topk, act["min_contexts"], population)
    log.info(
        "sae: %d alive features (%d with fewer than %d contexts), %d top-k rows",
        features.height, int(features["few_contexts"].sum()),
        act["min_contexts"], topk.height,
    )  # fmt: skip
    write_parquet(features, smk.output.features)
    write_parquet(topk, smk.output.topk)
    write_parquet(contexts, smk.output.contexts)
