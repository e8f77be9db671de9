"""Rule extract_activations: LoRA scalars of every SFT token into shards.

Resumable: valid shards from an earlier (killed) run of the same setup are
kept; the manifest, the rule's output, is written only when all are valid.
"""

from pathlib import Path

import polars as pl
from tqdm import tqdm

from lorascope.activations.extraction import (
    ExtractSettings,
    extract_to_shards,
    fingerprint,
)
from lorascope.core.models import load_causal_lm, load_lora_model, model_kwargs
from lorascope.core.runtime import resolve_device, script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    act = dict(smk.params.act)
    settings = ExtractSettings.from_config(act)
    # The very sequences the LoRA was trained on (s1 chat format, same ids).
    sft = pl.read_parquet(smk.input.sft, columns=["doc", "input_ids"])
    if act["n_docs"]:
        sft = sft.head(act["n_docs"])
    seqs, docs = sft["input_ids"].to_list(), sft["doc"].to_list()
    device = resolve_device(smk.params.device)
    # batch_tokens only changes memory use, so shards stay valid across it.
    fp = fingerprint(
        {k: v for k, v in act.items() if k != "batch_tokens"} | {"n_docs": len(docs)},
        smk.input.adapter,
        smk.input.sft,
        smk.params.base,
        model_kwargs(smk.params.model),
    )
    base = load_causal_lm(
        smk.params.base, device=str(device), **model_kwargs(smk.params.model)
    )
    model = load_lora_model(base, smk.input.adapter)
    n_tokens = sum(map(len, seqs))
    log.info("extracting %d docs, %d tokens on %s", len(docs), n_tokens, device)
    with tqdm(total=n_tokens, unit="tok", mininterval=10) as bar:
        manifest = extract_to_shards(
            model,
            seqs,
            docs,
            Path(smk.output.manifest).parent,
            settings,
            fp,
            device,
            on_tokens=bar.update,
        )
    log.info(
        "%d shards, %d tokens x %d components (%s)",
        len(manifest["shards"]),
        manifest["n_tokens"],
        manifest["n_components"],
        manifest["dtype"],
    )
