"""Content fingerprints of the files a user supplies (issue 33, item 3).

Used by `workflow/rules/common.smk` (`user_files_of`) while the Snakefile is
parsed: each rule that reads a local base model, adapter, full fine-tune,
SFT data file, benchmark file or prompt template carries the fingerprints of
those paths as a param, so Snakemake's `params` trigger reruns it when their
content changes, whatever their mtime says. Snakemake alone compares mtimes
(and, for files up to 1 MB, checksums only when the input is newer), so a
file restored with an older timestamp (`cp -p`, a `git checkout` of an old
revision, `rsync -t`) or a file edited inside an input directory (whose own
mtime does not move) left stale results.

What a fingerprint reads:
- a file up to `FULL_HASH_MAX` bytes: all of it (sha256);
- a larger file (model weights): its size, its safetensors header (dtypes,
  shapes, offsets: the first 8 + n bytes) when it is one, and `SAMPLES`
  blocks of `SAMPLE_BYTES` at evenly spaced offsets, the first and the last
  included. A retrained or different checkpoint differs in nearly every
  block; an edit of a few bytes in the middle of a 60 GB file can escape
  it, which is the price of not reading 60 GB at every parse (measured in
  docs/ARCHITECTURE.md: a 2 GiB file in ~30 ms instead of ~3 s);
- a directory: every file under it (relative path + fingerprint), leaving
  out hidden entries (`.cache/`, `.git/`, Snakemake's `.snakemake_timestamp`).

Results are kept in memory and on disk (`use_disk_cache`) keyed by the
file's (size, mtime_ns, ctime_ns, inode): a later parse stats the files and
reads only the changed ones. ctime cannot be set by a user, so a rewrite
restored to the old mtime still misses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "FULL_HASH_MAX",
    "SAMPLES",
    "SAMPLE_BYTES",
    "fingerprint",
    "fingerprints",
    "of_user_paths",
    "use_disk_cache",
]

FULL_HASH_MAX = 64 << 20  # 64 MiB: ~40 ms of sha256, once per change
SAMPLES = 128
SAMPLE_BYTES = 64 << 10  # 128 x 64 KiB = 8 MiB read from a file of any size
_HEADER_MAX = 100 << 20  # safetensors caps its JSON header at 100 MB
_FORMAT = 1  # of the disk cache's entries

_CACHE: dict = {"path": None, "entries": {}, "dirty": False}


def use_disk_cache(path: Path | str | None) -> None:
    """Keep file fingerprints in `path` (a JSON file) across parses."""
    _CACHE.update(path=Path(path) if path else None, entries={}, dirty=False)
    if path and Path(path).is_file():
        try:
            _CACHE["entries"] = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            pass  # a broken cache is only slower


def _save() -> None:
    if not (_CACHE["path"] and _CACHE["dirty"]):
        return
    path = _CACHE["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(_CACHE["entries"]))
    os.replace(tmp, path)  # concurrent parses: the last complete one wins
    _CACHE["dirty"] = False


def _sampled(f, size: int, h) -> None:
    """Size, safetensors header and evenly spaced blocks into `h`."""
    h.update(f"size {size}\n".encode())
    head = f.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else 0
    if 0 < n <= min(_HEADER_MAX, size - 8):
        header = f.read(n)
        if header[:1] == b"{":  # a safetensors file: its whole header counts
            h.update(b"safetensors header\n" + header)
    last = size - SAMPLE_BYTES
    for i in range(SAMPLES):
        f.seek(last * i // (SAMPLES - 1))
        h.update(f.read(SAMPLE_BYTES))


def _file(path: Path, st: os.stat_result) -> str:
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, _FORMAT]
    hit = _CACHE["entries"].get(key)
    if hit and hit[0] == stamp:
        return hit[1]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= FULL_HASH_MAX:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            digest = f"sha256:{h.hexdigest()[:32]}"
        else:
            _sampled(f, st.st_size, h)
            digest = f"sampled:{h.hexdigest()[:32]}"
    _CACHE["entries"][key] = [stamp, digest]
    _CACHE["dirty"] = True
    return digest


def _visible_files(folder: Path) -> list[Path]:
    """Files under `folder`, hidden entries (and what they hold) left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root, f) for f in sorted(files) if not f.startswith(".")]
    return found


def fingerprint(path: Path | str) -> str:
    """A short string that changes when the content at `path` changes
    ("missing" when nothing is there: Snakemake then reports the missing
    input itself)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    if not path.is_dir():
        return _file(path, st)
    h = hashlib.sha256()
    files = _visible_files(path)
    for p in files:
        rel = p.relative_to(path).as_posix()
        h.update(f"{rel}\0{_file(p, p.stat())}\n".encode())
    return f"dir:{h.hexdigest()[:32]} ({len(files)} files)"


def fingerprints(paths: Iterable[str]) -> dict[str, str]:
    """{path as given: fingerprint}, sorted by path (a rule's param: paths as
    the user wrote them, so a moved checkout records the same value)."""
    out = {p: fingerprint(p) for p in sorted(set(paths))}
    _save()
    return out


def of_user_paths(values, made: tuple[str, ...]) -> dict[str, str]:
    """`fingerprints` of the paths in `values` (a rule's inputs: strings,
    lists and dicts of them, nested) that do not start with a prefix in
    `made` (the folders rules write, whose outputs Snakemake tracks)."""
    paths, todo = [], [values]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo += item.values()
        elif isinstance(item, list | tuple):
            todo += item
        elif item and not str(item).startswith(made):
            paths.append(str(item))
    return fingerprints(paths)
