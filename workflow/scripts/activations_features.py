"""Rule activation_features: features, top-k and context windows of one kind.

kind `lora`: the stored LoRA scalars. kind `mlp`: the MLP-neuron baseline,
whose activations were never stored, so the windows around its top-k tokens
are recomputed with the same hooks (and checked against the streamed values).
"""

from pathlib import Path

import polars as pl

from lorascope.activations.extraction import shard_summary
from lorascope.activations.hooks import MlpCapture, mlp_doc_values
from lorascope.core.contexts import (
    build_contexts,
    features_frame,
    lora_units,
    mlp_units,
    token_strings,
)
from lorascope.core.io import write_parquet
from lorascope.core.models import (
    load_causal_lm,
    load_lora_model,
    load_tokenizer,
    model_kwargs,
)
from lorascope.core.runtime import resolve_device, script_logging
from lorascope.core.shards import open_shards

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    kind, act = smk.wildcards.kind, smk.params.act
    shards = open_shards(Path(smk.input.manifest).parent)
    meta = shards.meta  # what was extracted, not what the config says now
    top, stats = shard_summary(shards, kind)
    topk = top.to_frame()
    sft = pl.read_parquet(smk.input.sft, columns=["doc", "input_ids"])
    needed = sft.filter(pl.col("doc").is_in(topk["doc"].unique().implode()))
    token_ids = dict(
        zip(needed["doc"].to_list(), needed["input_ids"].to_list(), strict=True)
    )
    if kind == "lora":
        units = lora_units(pl.read_parquet(smk.input.components))

        def doc_values(docs):
            return ((d, cols["acts"]) for d, cols in shards.iter_docs(docs))

    else:
        units = mlp_units(meta["mlp_layers"], meta["mlp_neurons_per_layer"])
        device = resolve_device(smk.params.device)
        base = load_causal_lm(
            smk.params.base, device=str(device), **model_kwargs(smk.params.model)
        )
        model = load_lora_model(base, smk.input.adapter)
        mlp = MlpCapture(model, meta["mlp_neurons_per_layer"], meta["mlp_tensor"])
        doc_values = mlp_doc_values(model, mlp, token_ids, act["batch_tokens"], device)

    features = features_frame(kind, units, meta["polarity"], stats.to_frame())
    contexts = build_contexts(
        topk,
        token_ids,
        token_strings(load_tokenizer(smk.params.base)),
        doc_values,
        meta["polarity"],
        act["context_width"],
    )
    log.info("%s: %d features, %d top-k rows", kind, features.height, topk.height)
    write_parquet(features, smk.output.features)
    write_parquet(topk, smk.output.topk)
    write_parquet(contexts, smk.output.contexts)
