"""Writing activation shards: the shard plan, atomic writer, resume checks.

Used by rule `extract_activations` (through `lorascope.activations.extraction`).
The on-disk format and the reader every later stage uses live in
`lorascope.core.shards`: this module only writes what that one reads.

Shard i always covers the same rows of the SFT table (`shard_plan`), so a rerun
after a kill rewrites exactly the missing or invalid shards and a token can
never be stored twice. A shard's record (`shard-{i:05d}.json`) is written
last: it is the shard's commit marker.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from lorascope.core.io import atomic_path, read_json, sha256_file, write_json
from lorascope.core.shards import (
    DTYPE_NAMES,
    FORMAT,
    ShardError,
    check_record,
    shard_path,
)

__all__ = [
    "clear_shard",
    "shard_plan",
    "valid_record",
    "write_manifest",
    "write_shard",
]


def shard_plan(n_tokens_per_doc: Sequence[int], shard_tokens: int) -> list[tuple]:
    """Row ranges [start, end) of whole documents, each >= shard_tokens tokens.

    The last shard takes the remainder; a document longer than shard_tokens gets
    a shard of its own. Deterministic, so reruns (and data-parallel ranks) agree
    on which rows every shard holds.
    """
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    plan, start, acc = [], 0, 0
    for row, n in enumerate(n_tokens_per_doc):
        acc += int(n)
        if acc >= shard_tokens:
            plan.append((start, row + 1))
            start, acc = row + 1, 0
    if start < len(n_tokens_per_doc):
        plan.append((start, len(n_tokens_per_doc)))
    return plan


def _save(tensors: dict, path: Path) -> dict:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    return {"file": path.name, "sha256": sha256_file(path)}


def write_shard(
    shard_dir: Path | str,
    index: int,
    acts_TC: torch.Tensor,
    doc_T: torch.Tensor,
    pos_T: torch.Tensor,
    token_id_T: torch.Tensor,
    *,
    rows: tuple,
    fingerprint: str,
    extras: dict[str, dict[str, torch.Tensor]] | None = None,
) -> dict:
    """Write shard `index` (and its extras) atomically; return its record."""
    shard_dir = Path(shard_dir)
    T = acts_TC.shape[0]
    for name, col in (("doc", doc_T), ("pos", pos_T), ("token_id", token_id_T)):
        if col.shape != (T,):
            raise ValueError(f"shard {index}: {name} has shape {tuple(col.shape)}")
    data = {
        "acts": acts_TC,
        "doc": doc_T.to(torch.int64),
        "pos": pos_T.to(torch.int32),
        "token_id": token_id_T.to(torch.int32),
    }
    files = {"acts": _save(data, shard_path(shard_dir, index, "safetensors"))}
    for name, tensors in (extras or {}).items():
        path = shard_path(shard_dir, index, f"{name}.safetensors")
        files[name] = _save(tensors, path)
    record = {
        "index": index,
        "file": files["acts"]["file"],
        "sha256": files["acts"]["sha256"],
        "shape": [T, int(acts_TC.shape[1])],
        "dtype": DTYPE_NAMES[acts_TC.dtype],
        "rows": [int(rows[0]), int(rows[1])],
        "doc_range": [int(doc_T.min()), int(doc_T.max())] if T else None,
        "extras": {k: v for k, v in files.items() if k != "acts"},
        "fingerprint": fingerprint,
    }
    write_json(record, shard_path(shard_dir, index, "json"))  # commit marker
    return record


def valid_record(
    shard_dir: Path | str, index: int, fingerprint: str, rows: tuple
) -> dict | None:
    """The record of shard `index` if it is complete and from this very setup."""
    marker = shard_path(shard_dir, index, "json")
    if not marker.exists():
        return None
    try:
        rec = read_json(marker)
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("fingerprint") != fingerprint or rec.get("rows") != list(rows):
        return None
    return None if check_record(Path(shard_dir), rec) else rec


def clear_shard(shard_dir: Path | str, index: int) -> None:
    """Remove every file of shard `index` (marker first) before rewriting it."""
    shard_dir = Path(shard_dir)
    shard_path(shard_dir, index, "json").unlink(missing_ok=True)
    for p in shard_dir.glob(f"shard-{index:05d}.*"):
        p.unlink()
    for tmp in shard_dir.glob(f".shard-{index:05d}.*"):  # atomic_path leftovers
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(
    root: Path | str, records: Sequence[dict], columns: Sequence[str], meta: dict
) -> dict:
    """Write `root/manifest.json` listing every shard (paths relative to root)."""
    root = Path(root)
    records = sorted(records, key=lambda r: r["index"])
    if [r["index"] for r in records] != list(range(len(records))):
        raise ShardError(f"{root}: shard indices are not 0..{len(records) - 1}")
    dtypes = {r["dtype"] for r in records}
    if len(dtypes) > 1:
        raise ShardError(f"{root}: shards mix dtypes {sorted(dtypes)}")
    shards = []
    for r in records:
        r = dict(r, file=f"shards/{r['file']}")
        r["extras"] = {
            k: dict(v, file=f"shards/{v['file']}") for k, v in r["extras"].items()
        }
        shards.append(r)
    manifest = {
        "format": FORMAT,
        "n_tokens": sum(r["shape"][0] for r in records),
        "n_components": len(columns),
        "dtype": dtypes.pop() if dtypes else None,
        "columns": list(columns),
        "meta": meta,
        "shards": shards,
    }
    write_json(manifest, root / "manifest.json")
    return manifest
