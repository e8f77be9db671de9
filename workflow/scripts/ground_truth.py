"""Rule ground_truth: every feature scored against the toy world's token roles."""

import polars as pl

from lorascope.core.contexts import token_strings
from lorascope.core.io import atomic_path, to_markdown, write_parquet, write_table
from lorascope.core.models import (
    load_causal_lm,
    load_lora_model,
    load_tokenizer,
    model_kwargs,
)
from lorascope.core.runtime import resolve_device, script_logging
from lorascope.core.saes import load_sae
from lorascope.core.shards import open_shards
from lorascope.groundtruth.run import ground_truth
from lorascope.groundtruth.tokens import TokenSet, generation_tokens, sft_tokens
from lorascope.toy.tasks import sft_rows

smk = snakemake  # noqa: F821 (injected by Snakemake)
KINDS = ("lora", "mlp", "sae")

with script_logging(smk) as log:
    config = smk.params.config
    toy, gt = config["toy"], config["groundtruth"]
    device = resolve_device(config["device"])
    tok = load_tokenizer(smk.params.base)
    decode = token_strings(tok)
    sft = pl.read_parquet(smk.input.sft, columns=["doc", "input_ids"]).sort("doc")
    sft = sft.head(gt["sft_docs"])
    generated = sft_rows(
        toy["n_sft"], toy["sft_digits"], toy["seed"], toy["slip_rate"],
        toy["carry_slip_rate"],
    )  # fmt: skip
    ts = TokenSet()
    sft_ids = dict(zip(sft["doc"], sft["input_ids"].to_list(), strict=True))
    sft_tokens(ts, sft_ids, generated, decode)
    gens = []
    for name in (k for k in smk.input.keys() if k.startswith("gen_")):
        df = pl.read_parquet(smk.input[name], columns=["id", "prompt", "completion"])
        gens += list(df.iter_rows())
    generation_tokens(
        ts, gens, lambda t: tok(t, add_special_tokens=False)["input_ids"], decode
    )
    log.info(
        "%d SFT docs, %d generations; parser vs generator on SFT characters: "
        "%d of %d agree", sft.height, len(gens), ts.agree, ts.compared,
    )  # fmt: skip
    base = load_causal_lm(
        smk.params.base, device=str(device), **model_kwargs(config["model"])
    )
    model = load_lora_model(base, smk.input.adapter)
    model.eval()
    out = ground_truth(
        ts,
        model,
        load_sae(smk.input.sae, device=str(device)),
        open_shards(smk.input.manifest.rsplit("/", 1)[0]).meta,
        {k: pl.read_parquet(smk.input[f"features_{k}"]) for k in KINDS},
        {k: pl.read_parquet(smk.input[f"explanations_{k}"]) for k in KINDS},
        config["activations"]["batch_tokens"],
        device,
    )
    write_parquet(out["scores"], smk.output.scores)
    write_parquet(out["tokens"], smk.output.tokens)
    agreement = f"{ts.agree} of {ts.compared}"
    write_parquet(out["matched"], smk.output.matched)
    with atomic_path(smk.output.matched_md) as tmp:
        tmp.write_text(
            "# Ground truth: each role matched to one feature per kind (best F1)\n\n"
            + to_markdown(out["matched"])
        )
    write_table(
        out["summary"],
        smk.output.summary.removesuffix(".parquet"),
        "Ground truth: matched recovery per kind "
        f"(parser vs generator on SFT characters: {agreement} agree)",
    )
