"""An existing rank-1 adapter instead of a trained one (rule `adapter_import`).

With `model.adapter` set (a PEFT directory or a hub id, e.g. the paper's
published `jnward2/qwen-reasoning-lora`), training is skipped: the adapter is
checked against the config and copied to `train/rank1/adapter/`, the path
every later stage reads, so components, surgery, evaluation, extraction, SAE,
autointerp, ablation and steering run from it unchanged.

Checks, each failing with the adapter's path and the config key to change:
its rank equals `train.lora.r`, it adapts exactly the modules in
`train.lora.target_modules` (and every layer), and it was trained on the
configured base model (`base_model_name_or_path` in adapter_config.json).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lorascope.core.components import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterError,
    check_adapter,
    read_adapter_config,
)
from lorascope.core.io import atomic_path, write_json

__all__ = ["SOURCE_FILE", "check_existing_adapter", "import_adapter"]

SOURCE_FILE = "SOURCE.json"  # where the imported adapter came from


def _same_base(declared: str | None, base: str, base_repo: str | None) -> bool:
    """Whether the adapter's declared base is the configured one: equal hub ids,
    or the same final path component (a local copy of the same model)."""
    if not declared:
        return False
    names = {base, base_repo} - {None}
    tail = lambda s: s.rstrip("/").split("/")[-1].lower()  # noqa: E731
    return declared in names or tail(declared) in {tail(n) for n in names}


def check_existing_adapter(
    adapter_dir: Path | str,
    lora_cfg: dict,
    base: str,
    base_repo: str | None = None,
    check_base: bool = True,
) -> dict:
    """Fail clearly unless `adapter_dir` is the adapter this config analyses.

    `base` is the configured base model (hub id or local path); `base_repo`
    the hub id a local snapshot was fetched from, if any. Returns the
    adapter's config.
    """
    adapter_dir = Path(adapter_dir)
    cfg = read_adapter_config(adapter_dir)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{adapter_dir}: peft_type {cfg['peft_type']}, not LORA")
    want_modules = sorted(lora_cfg["target_modules"])
    have = cfg.get("target_modules")
    have = sorted([have] if isinstance(have, str) else have or [])
    if have != want_modules:
        raise AdapterError(
            f"{adapter_dir}: adapts {have}, the config expects {want_modules} "
            "(set train.lora.target_modules to analyse this adapter)"
        )
    if cfg.get("r") != lora_cfg["r"]:
        raise AdapterError(
            f"{adapter_dir}: rank {cfg.get('r')}, the config expects "
            f"train.lora.r = {lora_cfg['r']}"
        )
    modules = tuple(m.removesuffix("_proj") for m in lora_cfg["target_modules"])
    check_adapter(adapter_dir, rank=lora_cfg["r"], modules=modules)
    declared = cfg.get("base_model_name_or_path")
    if check_base and not _same_base(declared, base, base_repo):
        raise AdapterError(
            f"{adapter_dir}: trained on {declared!r}, but model.base is {base!r} "
            "(point model.base at that model, or set model.adapter_check_base: "
            "false if it is the same model under another name)"
        )
    return cfg


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
