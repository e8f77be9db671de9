"""Atomic writes and table helpers shared by every stage.

Nothing half-written may look finished: every artifact is written to a temp
sibling and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from lorascope.core.processes import run_alive


@contextlib.contextmanager
def atomic_path(path: Path | str, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temp path next to `path`; rename it onto `path` on success.

    On an exception the temp file/dir is removed and `path` is untouched.
    A job whose snakemake run is gone commits nothing: the run would not
    record the artifact (lorascope.core.processes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    # mkdtemp makes the dir private (0700); a finished dir gets normal modes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    target = tmp if is_dir else tmp / path.name
    try:
        yield target
        if not run_alive():
            raise RuntimeError(f"the snakemake run is gone: not writing {path}")
        if is_dir:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            os.replace(target, path)
            tmp.rmdir()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path | str, chunk: int = 1 << 23) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(obj: Any, path: Path | str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")


def read_json(path: Path | str) -> Any:
    with open(path) as f:
        return json.load(f)


def write_parquet(df: pl.DataFrame, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


def to_markdown(df: pl.DataFrame, float_fmt: str = "{:.4f}") -> str:
    """A GitHub-flavoured markdown rendering of a small frame."""

    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return float_fmt.format(v)
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join([header, rule, *rows]) + "\n"


def write_table(df: pl.DataFrame, stem: Path | str, title: str | None = None) -> None:
    """Write `stem.parquet` (for tools) and `stem.md` (for humans)."""
    stem = Path(stem)
    write_parquet(df, stem.with_suffix(".parquet"))
    text = (f"# {title}\n\n" if title else "") + to_markdown(df)
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(text)


class DataFileError(ValueError):
    """An input data file is unusable; the message names the file and where."""


TEXT_FORMATS = ("json", "jsonl", "csv")


def check_text_file(path: Path | str, what: str) -> None:
    """Fail naming `path` if a json/jsonl/csv data file is empty or not UTF-8.

    Read before the `datasets` loaders, which report an empty JSON file as a
    bare StopIteration and a bad byte without the file or where it is.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{what}: no file at {path}")
    data = path.read_bytes()
    if not data.strip():
        raise DataFileError(f"{what}: {path} is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFileError(
            f"{what}: {path} is not UTF-8 text: byte offset {err.start} (line "
            f"{line}) has {data[err.start : err.end]!r}; re-save the file as UTF-8"
        ) from None
