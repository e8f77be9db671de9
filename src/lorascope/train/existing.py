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
trained on the configured base model (`base_model_name_or_path`).
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

__all__ = ["SOURCE_FILE", "check_existing_adapter", "import_adapter", "snapshot_origin"]

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
