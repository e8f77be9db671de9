"""An existing rank-1 adapter instead of a trained one (rule `adapter_import`).

With `model.adapter` set (a PEFT directory or a hub id, e.g. the paper's
published `jnward2/qwen-reasoning-lora`), training is skipped: the adapter is
checked against the config and copied to `train/rank1/adapter/`, the path
every later stage reads, so components, surgery, evaluation, extraction, SAE,
autointerp, ablation and steering run from it unchanged.

The checks (`lorascope.core.components.check_existing_adapter`, also run on a
local adapter when the config is validated) fail with the adapter's path and
the config key to change: its rank equals `train.lora.r`, it adapts exactly
the modules in `train.lora.target_modules` (and every layer), and it was
trained on the configured base model (`base_model_name_or_path`), and it
trains nothing else (no `modules_to_save`, DoRA or biases).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lorascope.core.components import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    check_existing_adapter,
)
from lorascope.core.io import atomic_path, write_json

__all__ = [
    "SOURCE_FILE",
    "base_layers",
    "check_existing_adapter",
    "import_adapter",
    "snapshot_origin",
]

SOURCE_FILE = "SOURCE.json"  # where the imported adapter came from


def import_adapter(source: Path | str, out_dir: Path | str, origin: dict) -> list[str]:
    """Copy a checked adapter dir to `out_dir` (atomic) with its provenance."""
    source = Path(source)
    files = [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    missing = [f for f in files if not (source / f).is_file()]
    if missing:
        raise AdapterError(f"{source}: not a PEFT adapter dir (missing {missing})")
    with atomic_path(out_dir, is_dir=True) as tmp:
        for item in source.iterdir():  # config, weights, tokenizer files, README
            if item.is_file() and item.name != SOURCE_FILE:
                shutil.copy2(item, tmp / item.name)
        write_json(origin, tmp / SOURCE_FILE)
    return sorted(p.name for p in Path(out_dir).iterdir())


def snapshot_origin(path: Path | str) -> dict:
    """What a local dir says of its origin (SNAPSHOT.json of a hub fetch)."""
    record = Path(path) / "SNAPSHOT.json"
    return json.loads(record.read_text()) if record.exists() else {"path": str(path)}


def base_layers(base: str, revision: str | None = None) -> int:
    """num_hidden_layers of the base model: its local config.json (a dir, a
    prefetched snapshot), else the hub's (a hub id without prefetch)."""
    local = Path(base) / "config.json"
    if local.is_file():
        path = local
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(base, "config.json", revision=revision))
    cfg = json.loads(path.read_text())
    n = cfg.get("num_hidden_layers") or (cfg.get("text_config") or {}).get(
        "num_hidden_layers"
    )
    if not n:
        raise AdapterError(f"{path}: no num_hidden_layers (the base model's layers)")
    return int(n)
