"""Activation shards on disk: the format and its verifying reader.

Written by rule `extract_activations` (`lorascope.activations.shard_writer`);
read through `open_shards` by the feature, SAE, ablation and dashboard rules.

Layout under the activations dir (`results/{run}/activations/`):

- `shards/shard-{i:05d}.safetensors`: `acts [T, C]` (config dtype), `doc [T]`
  int64, `pos [T]` int32, `token_id [T]` int32; T tokens of whole documents.
- `shards/shard-{i:05d}.{extra}.safetensors`: optional per-shard extras (the
  extractor stores per-shard top-k state there).
- `shards/shard-{i:05d}.json`: the shard's record (shape, dtype, sha256 of every
  file, rows, fingerprint). Written last: it is the shard's commit marker.
- `manifest.json`: every record plus totals, written once all shards are valid.

Every shard holds whole documents and the same rows of the SFT table on every
rerun (see the writer), so a doc's tokens live in exactly one shard.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lorascope.core.finite import check_finite
from lorascope.core.io import read_json, sha256_file

__all__ = [
    "FORMAT",
    "ShardError",
    "ShardSet",
    "check_record",
    "open_shards",
    "shard_path",
]

FORMAT = "lorascope-shards/1"
COLUMNS = ("acts", "doc", "pos", "token_id")
_INDEX_DTYPES = {"doc": torch.int64, "pos": torch.int32, "token_id": torch.int32}
DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}


class ShardError(RuntimeError):
    """A shard or the manifest is missing, corrupt or inconsistent."""


def shard_path(shard_dir: Path | str, index: int, extra: str | None = None) -> Path:
    stem = f"shard-{index:05d}"
    return Path(shard_dir) / (f"{stem}.{extra}" if extra else stem)


def _check_file(path: Path, sha256: str) -> str | None:
    if not path.exists():
        return f"{path}: missing"
    if sha256_file(path) != sha256:
        return f"{path}: sha256 mismatch (corrupt or changed since it was written)"
    return None


def check_record(base: Path, rec: dict) -> str | None:
    """None if the shard (and extras) on disk match the record, else why not."""
    path = base / rec["file"]
    problem = _check_file(path, rec["sha256"])
    if problem:
        return problem
    try:
        with safe_open(str(path), framework="pt") as f:
            shape = list(f.get_slice("acts").get_shape())
            dtype = f.get_slice("acts").get_dtype()
    except Exception as e:  # safetensors raises several types on corrupt files
        return f"{path}: unreadable safetensors file ({e})"
    if shape != rec["shape"]:
        return f"{path}: acts shape {shape} != manifest {rec['shape']}"
    if {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}.get(dtype) != rec[
        "dtype"
    ]:
        return f"{path}: acts dtype {dtype} != manifest {rec['dtype']}"
    for extra in rec.get("extras", {}).values():
        problem = _check_file(base / extra["file"], extra["sha256"])
        if problem:
            return problem
    return None


class ShardSet:
    """Read access to a verified set of shards (see `open_shards`)."""

    def __init__(self, root: Path, manifest: dict):
        self.root = root
        self.manifest = manifest
        self.shards: list[dict] = manifest["shards"]
        self.columns: list[str] = manifest["columns"]
        self.meta: dict = manifest.get("meta", {})

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def n_components(self) -> int:
        return int(self.manifest["n_components"])

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.manifest["dtype"])

    def read_shard(self, rec: dict) -> dict[str, torch.Tensor]:
        path = self.root / rec["file"]
        try:
            data = load_file(str(path))
        except Exception as e:  # missing or corrupt after open_shards verified it
            raise ShardError(f"{path}: cannot read shard ({e})") from e
        if list(data["acts"].shape) != rec["shape"]:
            raise ShardError(f"{path}: acts shape changed since the manifest")
        check_finite({"acts": data["acts"]}, path)  # rows are tokens
        return {k: data[k] for k in COLUMNS}

    def read_extra(self, rec: dict, name: str) -> dict[str, torch.Tensor]:
        path = self.root / rec["extras"][name]["file"]
        try:
            data = load_file(str(path))
        except Exception as e:
            raise ShardError(f"{path}: cannot read shard extra ({e})") from e
        # Extras hold streamed top-k state: its unfilled slots are -Inf.
        check_finite(data, path, allow_inf=True)
        return data

    def iter_shards(self) -> Iterator[dict[str, torch.Tensor]]:
        """One dict (`acts [T, C]`, `doc`, `pos`, `token_id`) per shard, in order."""
        for rec in self.shards:
            yield self.read_shard(rec)

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        dtype: torch.dtype | None = torch.float32,
        drop_last: bool = False,
        rows: Callable[[dict], torch.Tensor] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Stream `acts [batch_size, C]` batches, holding one shard at a time.

        With shuffle, shard order and rows within each shard are permuted (a
        seeded generator: same seed, same order); rows left over at a shard's
        end are carried into the next shard's batches. The last partial batch
        is yielded unless drop_last. `rows` (a shard's columns -> bool mask)
        keeps only some rows of each shard (a held-out split).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        gen = torch.Generator().manual_seed(seed)
        order = range(len(self.shards))
        if shuffle:
            order = torch.randperm(len(self.shards), generator=gen).tolist()
        carry = None
        for i in order:
            data = self.read_shard(self.shards[i])
            acts = data["acts"] if rows is None else data["acts"][rows(data)]
            if dtype is not None:
                acts = acts.to(dtype)
            if shuffle:
                acts = acts[torch.randperm(acts.shape[0], generator=gen)]
            if carry is not None:
                acts = torch.cat([carry, acts])
            n_full = acts.shape[0] // batch_size * batch_size
            yield from acts[:n_full].split(batch_size)
            carry = acts[n_full:] if n_full < acts.shape[0] else None
        if carry is not None and not drop_last:
            yield carry

    def load_all(self) -> dict[str, torch.Tensor]:
        """Every shard concatenated (small runs and tests; streams otherwise)."""
        parts = list(self.iter_shards())
        if not parts:
            return {
                "acts": torch.empty(0, self.n_components, dtype=self.dtype),
                **{k: torch.empty(0, dtype=v) for k, v in _INDEX_DTYPES.items()},
            }
        return {k: torch.cat([p[k] for p in parts]) for k in COLUMNS}

    def iter_docs(self, docs: Iterable[int]) -> Iterator[tuple[int, dict]]:
        """(doc, columns of that doc's tokens in position order) for each doc.

        Reads each shard at most once; docs are yielded in shard order.
        """
        wanted = set(int(d) for d in docs)
        found = set()
        for rec in self.shards:
            lo_hi = rec.get("doc_range")
            if lo_hi is None or not any(lo_hi[0] <= d <= lo_hi[1] for d in wanted):
                continue
            data = self.read_shard(rec)
            doc_np = data["doc"].numpy()
            for d in sorted(wanted.intersection(np.unique(doc_np).tolist())):
                idx = torch.from_numpy(np.flatnonzero(doc_np == d))
                cols = {k: v[idx] for k, v in data.items()}
                order = torch.argsort(cols["pos"])
                found.add(d)
                yield d, {k: v[order] for k, v in cols.items()}
        missing = wanted - found
        if missing:
            raise ShardError(f"{self.root}: docs {sorted(missing)[:8]} not in shards")


def open_shards(path: Path | str, verify: bool = True) -> ShardSet:
    """Open the activations dir (or its manifest.json) and verify every shard.

    Verification checks each file's sha256, the acts shape and the dtype against
    the manifest; the first bad shard raises ShardError naming the file.
    """
    path = Path(path)
    manifest_path = path if path.suffix == ".json" else path / "manifest.json"
    if not manifest_path.exists():
        raise ShardError(f"{manifest_path}: no shard manifest (run extraction)")
    try:
        manifest = read_json(manifest_path)
    except json.JSONDecodeError as e:
        raise ShardError(f"{manifest_path}: not valid JSON ({e})") from e
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{manifest_path}: format {manifest.get('format')!r}")
    root = manifest_path.parent
    for rec in manifest["shards"]:
        if rec["shape"][1] != manifest["n_components"]:
            raise ShardError(f"{root / rec['file']}: width != n_components")
        if verify:
            problem = check_record(root, rec)
            if problem:
                raise ShardError(problem)
    return ShardSet(root, manifest)
