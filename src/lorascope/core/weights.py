"""Named tensors of a model's checkpoint, read without loading the model.

A model saved by transformers keeps its weights in `model.safetensors`, or
sharded with `model.safetensors.index.json` mapping each tensor name to its
shard. `read_tensors` opens only the shards holding the names asked for and
reads only those tensors (safetensors reads a tensor's bytes, not the
file), so rule `direct_effects` gets the unembedding and final norm of a
32B model in seconds and ~1 GB, not 61 GiB. A hub id is read from the hub
(or its local cache): the index and the shards it needs, nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["INDEX", "SINGLE", "WeightsError", "read_tensors", "tensor_files"]

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class WeightsError(ValueError):
    """A checkpoint lacks a tensor asked for, or has no safetensors files."""


def _fetcher(path: str, revision: str | None):
    """file name -> its local path, or None when the checkpoint has no such
    file: a directory's file, or a hub id's (downloaded once, then cached)."""
    if Path(path).is_dir():
        return lambda name: Path(path) / name if (Path(path) / name).is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    def fetch(name: str) -> Path | None:
        try:
            return Path(hf_hub_download(path, name, revision=revision))
        except EntryNotFoundError:  # not in the repo, or offline and not cached
            return None

    return fetch


def tensor_files(path: str, revision: str | None = None) -> tuple[dict, object]:
    """(tensor name -> file name, file fetcher) of a checkpoint: the index's
    weight_map, or every tensor of the single file."""
    from safetensors import safe_open

    fetch = _fetcher(path, revision)
    index = fetch(INDEX)
    if index is not None:
        return json.loads(index.read_text())["weight_map"], fetch
    single = fetch(SINGLE)
    if single is None:
        raise WeightsError(
            f"{path}: no {INDEX} and no {SINGLE} (only safetensors checkpoints "
            "are read tensor by tensor; a hub id offline must be in the cache)"
        )
    with safe_open(single, framework="pt") as f:
        return dict.fromkeys(f.keys(), SINGLE), fetch


def read_tensors(path: str, names, revision: str | None = None) -> dict:
    """{name: tensor} for `names`, as stored (dtype included), read from the
    shards that hold them. Fails naming the first missing tensor."""
    from safetensors import safe_open

    where, fetch = tensor_files(path, revision)
    missing = [n for n in names if n not in where]
    if missing:
        raise WeightsError(
            f"{path}: no tensor {missing[0]!r} in its checkpoint "
            f"({len(where)} tensors, e.g. {sorted(where)[:3]})"
        )
    out = {}
    for file in sorted({where[n] for n in names}):
        with safe_open(fetch(file), framework="pt") as f:
            for name in names:
                if where[name] == file:
                    out[name] = f.get_tensor(name)
    return out
