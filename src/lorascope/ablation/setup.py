"""Data in and out of the `kl_ablation` and `steering_sweep` rules.

Loads the base model + rank-1 adapter, checks components.parquet against it,
draws the training sequences both rules measure KL on (so the two see the
same tokens), and turns per-sequence KL into the ablation tables.

The draw: `ablation.draw_rng` `default_rng` (numpy's Generator) or `legacy`
(numpy's global RandomState, as the paper's public code drew its 16 rows
with `np.random.seed(42); np.random.choice(...)`: with seed 42 the same row
indices). The average: `ablation.average` `tokens` pools every counted token
of every sequence; `sequences` averages the per-sequence means (the public
code's `np.mean` over sequences).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from lorascope.ablation.kl import Ablation
from lorascope.ablation.scalar_control import check_table
from lorascope.core.models import load_causal_lm, load_lora_model, load_tokenizer
from lorascope.core.runtime import seed_everything

__all__ = [
    "assistant_masks",
    "draw_rows",
    "kl_sequences",
    "load_lora",
    "select_sequences",
    "sequence_seed",
    "summarise",
]


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
        cfg["draw_rng"],
    )


def assistant_masks(config: dict, sft_path: str) -> list[torch.Tensor]:
    """Per KL sequence (same draw and cut as `kl_sequences`), its assistant
    tokens (bool [T]: a loss label): the positions a model generates, which
    `steering.positions: generated` shifts on these training sequences."""
    cfg = config["ablation"]
    sft = pl.read_parquet(sft_path, columns=["labels"])
    rows = draw_rows(
        len(sft), cfg["n_sequences"], sequence_seed(config), cfg["draw_rng"]
    )
    return [
        torch.tensor(sft["labels"][int(r)].to_list()[: cfg["max_tokens"]]) != -100
        for r in rows
    ]


def draw_rows(n_rows: int, n: int, seed: int, rng: str = "default_rng") -> np.ndarray:
    """Sorted row indices of the `n` sequences drawn without replacement."""
    if rng == "default_rng":
        rows = np.random.default_rng(seed).choice(n_rows, n, replace=False)
    elif rng == "legacy":  # = np.random.seed(seed); np.random.choice(arange, n)
        rows = np.random.RandomState(seed).choice(np.arange(n_rows), n, replace=False)
    else:
        raise ValueError(f"ablation.draw_rng: unknown generator {rng!r}")
    return np.sort(rows)


def select_sequences(
    sft: pl.DataFrame,
    n: int,
    max_tokens: int,
    seed: int,
    scope: str,
    rng: str = "default_rng",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """N training sequences (fixed seed), cut to max_tokens, with their KL scope.

    scope "all": every position that has a next token; "assistant": positions
    whose next token carries a loss label (the assistant turn).
    """
    if scope not in ("all", "assistant"):
        raise ValueError(f"ablation.token_scope: unknown scope {scope!r}")
    if len(sft) < n:
        raise ValueError(
            f"ablation.n_sequences: {n} requested but the SFT set has {len(sft)} rows"
        )
    rows = draw_rows(len(sft), n, seed, rng)
    out = []
    for row in rows:
        ids_T = torch.tensor(sft["input_ids"][int(row)].to_list()[:max_tokens])
        scope_T = torch.zeros(len(ids_T), dtype=torch.bool)
        if scope == "all":
            scope_T[:-1] = True
        else:
            labels_T = torch.tensor(sft["labels"][int(row)].to_list()[:max_tokens])
            scope_T[:-1] = labels_T[1:] != -100
        out.append((ids_T, scope_T))
    return out


def summarise(
    table: pl.DataFrame,
    ablations: list[Ablation],
    kl_AS: np.ndarray,
    tokens_S: np.ndarray,
    mean_abs_C: np.ndarray,
    average: str = "tokens",
) -> dict[str, pl.DataFrame]:
    """Tables `layers`, `components`, `groups`: mean KL and its spread.

    kl_token_mean pools all counted tokens, kl_sequence_mean averages the
    per-sequence means; kl_mean is the one `average` names (ablation.average).
    kl_seq_std / kl_seq_sem describe the spread of the per-sequence means.
    A components row is one direction (`rank_slot`) of one module; for a
    rank > 1 adapter (`module` ablations present) it also has module_kl_mean,
    module_kl_seq_std and module_kl_seq_sem: the same with every direction of
    its (layer, module) ablated at once, on each of the module's rows.
    """
    n_seq = kl_AS.shape[1]
    pooled_A = kl_AS @ tokens_S / max(tokens_S.sum(), 1)
    seq_mean_A = kl_AS.mean(axis=1)
    means = {"tokens": pooled_A, "sequences": seq_mean_A}
    if average not in means:
        raise ValueError(f"ablation.average: unknown average {average!r}")
    std_A = kl_AS.std(axis=1, ddof=1) if n_seq > 1 else np.full(len(kl_AS), np.nan)
    stats = pl.DataFrame(
        {
            "kind": [a.kind for a in ablations],
            "key": [a.key for a in ablations],
            "n_ablated": [int(a.mask_C.sum()) for a in ablations],
            "kl_mean": means[average],
            "kl_token_mean": pooled_A,
            "kl_sequence_mean": seq_mean_A,
            "kl_seq_std": std_A,
            "kl_seq_sem": std_A / np.sqrt(n_seq),
            "kl_seq_min": kl_AS.min(axis=1),
            "kl_seq_max": kl_AS.max(axis=1),
            "n_sequences": [n_seq] * len(ablations),
            "n_tokens": [int(tokens_S.sum())] * len(ablations),
        }
    )

    def part(kind: str, name: str, dtype) -> pl.DataFrame:
        return (
            stats.filter(pl.col("kind") == kind)
            .with_columns(pl.col("key").cast(dtype).alias(name))
            .drop("kind", "key")
            .select(name, pl.exclude(name))
        )

    components = table.select("index", "layer", "module", "group", "rank_slot", "name")
    components = components.with_columns(mean_abs_act=pl.Series(mean_abs_C))
    components = components.join(part("component", "index", pl.Int64), on="index")
    if any(a.kind == "module" for a in ablations):
        key = pl.col("where").str.split(".")  # "3.gate"
        module = part("module", "where", pl.Utf8).select(
            key.list.get(0).cast(pl.Int64).alias("layer"),
            key.list.get(1).alias("module"),
            *[
                pl.col(c).alias(f"module_{c}")
                for c in ("kl_mean", "kl_seq_std", "kl_seq_sem")
            ],
        )
        components = components.join(
            module, on=["layer", "module"], how="left", maintain_order="left"
        )
    return {
        "layers": part("layer", "layer", pl.Int64),
        "components": components.drop("n_ablated"),
        "groups": part("group", "group", pl.Utf8),
    }
