"""Rules lora_features, mlp_features: features, top-k and context windows of
one kind.

kind `lora`: the stored LoRA scalars. kind `mlp`: the MLP-neuron baseline,
whose activations were never stored, so the windows around its top-k tokens
are recomputed with the same hooks (and checked against the streamed values).
Which features are kept (modules, dominant sign, real activations only):
lorascope.activations.populations.
"""

from pathlib import Path

import polars as pl

from lorascope.activations.extraction import shard_summary
from lorascope.activations.hooks import MlpCapture, mlp_doc_values
from lorascope.activations.populations import build_feature_tables, describe_population
from lorascope.core.contexts import lora_units, mlp_units, token_strings
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
    kind, act = smk.params.kind, smk.params.act
    shards = open_shards(Path(smk.input.manifest).parent)
    meta = shards.meta  # what was extracted, not what the config says now
    polarity = meta["polarity"] if kind == "lora" else meta["mlp_polarity"]
    # sample None: extracted with sample_k 0
    top, stats, sample = shard_summary(shards, kind)
    sft = pl.read_parquet(smk.input.sft, columns=["doc", "input_ids"])

    def token_ids(docs):
        needed = sft.filter(pl.col("doc").is_in(list(docs)))
        return dict(zip(needed["doc"], needed["input_ids"].to_list(), strict=True))

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
        mlp = MlpCapture(
            model, meta["mlp_neurons_per_layer"], meta["mlp_tensor"], meta["mlp_lora"]
        )

        def doc_values(docs):
            rows = token_ids(docs)
            fn = mlp_doc_values(model, mlp, rows, act["batch_tokens"], device)
            return fn(docs)

    features, topk, contexts = build_feature_tables(
        kind,
        units,
        top,
        stats,
        polarity,
        act,
        token_ids,
        token_strings(load_tokenizer(smk.params.base)),
        doc_values,
        describe_population(kind, meta, act),
        sample,
    )
    log.info(
        "%s: %d features (%d with fewer than %d contexts), %d top-k rows, "
        "%d contexts (%d from the random sample only)",
        kind, features.height, int(features["few_contexts"].sum()),
        act["min_contexts"], topk.height, contexts.height,
        int((contexts["source"] == "sample").sum()),
    )  # fmt: skip
    write_parquet(features, smk.output.features)
    write_parquet(topk, smk.output.topk)
    write_parquet(contexts, smk.output.contexts)
