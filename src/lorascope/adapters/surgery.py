"""Derived adapters with chosen LoRA components ablated (rule `adapters_ablate`).

Ablating a component zeroes its rank slot's column of lora_B, so its delta
`B[:, s] * (A[s] @ x)` is exactly zero while the scalar `A[s] @ x` that the
activation stage reads is unchanged. The result keeps PEFT's file format
(same adapter_config.json, same tensor names, shapes and dtypes), so
`PeftModel.from_pretrained` and vLLM's `LoRARequest` load it like the original.
Components are chosen with `lorascope.core.components.select`, the same API the
KL ablation and steering use.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
from safetensors import safe_open
from safetensors.torch import save_file

from lorascope.core.components import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    component_table,
    select,
)
from lorascope.core.io import atomic_path, write_json

__all__ = ["ABLATION_FILE", "VARIANT_GROUPS", "ablate_adapter", "ablation_mask"]

ABLATION_FILE = "ablation.json"  # which components were zeroed, for provenance
# Table 2's derived variants: the LoRA component group each one removes.
VARIANT_GROUPS = {"rank1-attn-ablated": "attn", "rank1-mlp-ablated": "mlp"}


def ablation_mask(table: pl.DataFrame, **criteria) -> np.ndarray:
    """`select(table, **criteria)`, refusing a selection that matches nothing."""
    mask = select(table, **criteria)
    if not mask.any():
        raise ValueError(f"ablation selects no component: {criteria}")
    return mask


def _b_key(keys: set[str], module_name: str) -> str:
    for key in (
        f"base_model.model.{module_name}.lora_B.weight",
        f"{module_name}.lora_B.weight",
    ):
        if key in keys:
            return key
    raise KeyError(f"adapter has no lora_B weight for module {module_name!r}")


def ablate_adapter(
    adapter_dir: Path | str, out_dir: Path | str, mask: np.ndarray
) -> pl.DataFrame:
    """Write `out_dir`: a copy of `adapter_dir` with masked components zeroed.

    `mask` is a boolean array over the adapter's component table (as from
    `select`). Returns the table rows that were ablated. `out_dir` appears
    only when complete.
    """
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    table = component_table(adapter_dir)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (table.height,):
        raise ValueError(
            f"mask has shape {mask.shape}, adapter {adapter_dir} has "
            f"{table.height} components"
        )
    weights = adapter_dir / ADAPTER_WEIGHTS
    with safe_open(weights, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata()
    ablated = table.filter(pl.Series(mask))
    keys = set(tensors)
    for name, slot in ablated.select("name", "rank_slot").rows():
        key = _b_key(keys, name)
        lora_B = tensors[key].clone()  # (d_out, r)
        lora_B[:, slot] = 0
        tensors[key] = lora_B
    with atomic_path(out_dir, is_dir=True) as tmp:  # an existing empty dir
        for item in adapter_dir.iterdir():
            # Config, README, tokenizer files... travel unchanged.
            if item.is_file() and item.name not in (ADAPTER_WEIGHTS, ABLATION_FILE):
                shutil.copy2(item, tmp / item.name)
        if not (tmp / ADAPTER_CONFIG).exists():
            raise FileNotFoundError(f"{adapter_dir / ADAPTER_CONFIG} is missing")
        save_file(tensors, tmp / ADAPTER_WEIGHTS, metadata=metadata)
        write_json(
            {
                "source": str(adapter_dir),
                "n_ablated": ablated.height,
                "n_components": table.height,
                # rank > 1: which direction (row of lora_A) each entry is
                "ablated": ablated.select(
                    "index",
                    "layer",
                    "module",
                    *(["rank_slot"] if table["rank_slot"].max() > 0 else []),
                ).to_dicts(),  # fmt: skip
            },
            tmp / ABLATION_FILE,
        )
    return ablated
