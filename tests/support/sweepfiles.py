"""A sweep member's artifacts written for tests, in the producers' formats:
the PEFT adapter (lora_A/lora_B per module), components.parquet (the real
`core.components.component_table`), activation shards (the real shard
writer), a JumpReLU SAE that `core.saes.load_sae` reads, the feature tables
and the autointerp labels. Tiny dims: 2 layers x (q, gate) = 4 modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file
from shardfiles import write_doc_shards

from lorascope.core.components import component_table

MODULES = [
    f"model.layers.{layer}.{part}" for layer in (0, 1)
    for part in ("self_attn.q_proj", "mlp.gate_proj")
]  # fmt: skip
D_IN, D_OUT = 6, 5
DOC_LEN = 20
CATEGORIES = ["math", "discourse"]


def adapter_factors(rank: int, gen: torch.Generator) -> dict[str, dict]:
    """Random lora_A [r, D_IN] and lora_B [D_OUT, r] per module."""
    return {
        m: {"A": torch.randn(rank, D_IN, generator=gen),
            "B": torch.randn(D_OUT, rank, generator=gen)}
        for m in MODULES
    }  # fmt: skip


def write_adapter(root: Path, factors: dict[str, dict]) -> Path:
    adapter = root / "train/rank1/adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for m, ab in factors.items():
        tensors[f"base_model.model.{m}.lora_A.weight"] = ab["A"].contiguous()
        tensors[f"base_model.model.{m}.lora_B.weight"] = ab["B"].contiguous()
    save_file(tensors, adapter / "adapter_model.safetensors")
    rank = next(iter(factors.values()))["A"].shape[0]
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank})
    )
    component_table(adapter).write_parquet(root / "components.parquet")
    return adapter


def write_sae(root: Path, w: dict[str, torch.Tensor]) -> None:
    """A JumpReLU SAE (W_enc [C, F], b_enc, W_dec [F, C], b_dec, threshold)."""
    out = root / "sae/model"
    out.mkdir(parents=True, exist_ok=True)
    c, f = w["W_enc"].shape
    cfg = {"architecture": "jumprelu", "d_in": c, "d_sae": f, "dtype": "float32",
           "apply_b_dec_to_input": True, "normalize_activations": "none"}  # fmt: skip
    (out / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.float().contiguous() for k, v in w.items()},
              out / "sae_weights.safetensors")  # fmt: skip


def random_sae(c: int, f: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "W_enc": torch.randn(c, f, generator=gen),
        "b_enc": torch.zeros(f),
        "W_dec": torch.randn(f, c, generator=gen),
        "b_dec": torch.zeros(c),
        "threshold": torch.zeros(f),
    }


def write_features(root: Path, kind: str, n_units: int) -> pl.DataFrame:
    """features.parquet with one feature per unit (polarity dominant/pos)."""
    key = "component" if kind == "lora" else "latent"
    df = pl.DataFrame({
        "feature": np.arange(n_units), "kind": kind,
        "label": [f"{kind}.{i}" for i in range(n_units)],
        key: np.arange(n_units),
    })  # fmt: skip
    path = root / f"features/{kind}/features.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)
    return df


def write_labels(root: Path, kind: str, n: int) -> pl.DataFrame:
    """Autointerp labels: feature i has category CATEGORIES[i % 2], class
    i % 3, and the last feature is unlabelled (status failed)."""
    status = ["ok"] * (n - 1) + ["failed"]
    (root / "autointerp/assignments").mkdir(parents=True, exist_ok=True)
    (root / "autointerp/explanations").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "feature": np.arange(n),
            "kind": kind,
            "category": [CATEGORIES[i % 2] for i in range(n)],
            "subcategory": [None] * n,
            "status": status,
        },
        schema_overrides={"subcategory": pl.String},
    ).write_parquet(root / f"autointerp/assignments/{kind}.parquet")
    explanations = pl.DataFrame({
        "feature": np.arange(n), "kind": kind,
        "classification": pl.Series([i % 3 for i in range(n)], dtype=pl.Int8),
        "status": status,
    })  # fmt: skip
    explanations.write_parquet(root / f"autointerp/explanations/{kind}.parquet")
    return explanations


def write_member(
    root: Path, acts_NC: torch.Tensor, factors: dict, sae: dict | None = None,
    labels: bool = False, doc_len: int = DOC_LEN,
) -> Path:  # fmt: skip
    """Every artifact of one member under `root` (its results dir)."""
    root.mkdir(parents=True, exist_ok=True)
    write_adapter(root, factors)
    write_doc_shards(root / "activations", acts_NC.float(), 3, doc_len)
    write_features(root, "lora", acts_NC.shape[1])
    if sae is not None:
        write_sae(root, sae)
        write_features(root, "sae", sae["W_enc"].shape[1])
    if labels:
        write_labels(root, "lora", acts_NC.shape[1])
        if sae is not None:
            write_labels(root, "sae", sae["W_enc"].shape[1])
    return root


def member(tag: str, rank: int, seed: int, root: Path, step: int | None = None) -> dict:
    return {"tag": tag, "rank": rank, "seed": seed, "step": step, "root": str(root)}
