"""Shared set-up of the `kl_ablation` and `steering_sweep` rules.

Loads the base model + rank-1 adapter once, checks components.parquet against
it, and draws the training sequences both rules measure KL on, so the two
rules see the same tokens.
"""

from __future__ import annotations

import polars as pl

from lorascope.ablation import select_sequences
from lorascope.masked_lora import check_table
from lorascope.models import load_causal_lm, load_lora_model, load_tokenizer
from lorascope.runtime import seed_everything

__all__ = ["load_lora", "kl_sequences", "sequence_seed"]


def sequence_seed(config: dict) -> int:
    seed = config["ablation"]["seed"]
    return config["seed"] if seed is None else seed


def load_lora(config: dict, base: str, adapter: str, components: str):
    """(PeftModel in eval mode, tokenizer, component table) on the ablation device."""
    seed_everything(sequence_seed(config))
    model_cfg = config["model"]
    device = config["ablation"]["device"] or config["device"]
    model = load_causal_lm(
        base,
        dtype=model_cfg["dtype"],
        attn_implementation=model_cfg["attn_implementation"],
        device=device,
        revision=model_cfg["revision"],
    )
    model = load_lora_model(model, adapter).eval()
    table = pl.read_parquet(components)
    check_table(table, model)
    return model, load_tokenizer(base, model_cfg["revision"]), table


def kl_sequences(config: dict, sft_path: str):
    """The ablation's training sequences: (input_ids [T], scope [T]) pairs."""
    cfg = config["ablation"]
    sft = pl.read_parquet(sft_path, columns=["input_ids", "labels"])
    return select_sequences(
        sft,
        cfg["n_sequences"],
        cfg["max_tokens"],
        sequence_seed(config),
        cfg["token_scope"],
    )
