"""The SFT set: load s1K-1.1-schema rows, format them the s1 way, tokenise.

Used by rule `sft_dataset`. The toy world writes its rows in the same schema
as simplescaling/s1K-1.1, so the embedded default and the paper run share
this code end to end.
"""

from __future__ import annotations

import logging

import polars as pl

from lorascope.core.chat import IGNORE_INDEX, build_example
from lorascope.core.io import TEXT_FORMATS, DataFileError, check_text_file
from lorascope.core.names import is_toy

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The dataset is unusable; the message names the file/column/row."""


class FrameRows:
    """A polars frame read as `load_rows`' callers read a `datasets.Dataset`:
    `column_names`, `len`, `select`, rows as dicts. The toy set is read this
    way: `datasets` costs ~1 s of CPU to import and cache a parquet file the
    job reads once (tests/unit/test_sft_rows.py: the same rows either way)."""

    def __init__(self, frame: pl.DataFrame):
        self._frame = frame

    @property
    def column_names(self) -> list[str]:
        return self._frame.columns

    def __len__(self) -> int:
        return self._frame.height

    def __iter__(self):
        return self._frame.iter_rows(named=True)

    def __getitem__(self, i: int) -> dict:
        return self._frame.row(i, named=True)

    def select(self, indices) -> FrameRows:
        return FrameRows(self._frame[list(indices)])


def load_rows(
    data_cfg: dict, toy_parquet: str | None = None, snapshot: str | None = None
):
    """Load the raw SFT rows as a `datasets.Dataset` through `load_dataset`
    (the toy parquet as `FrameRows`).

    `snapshot`: a local copy of the hub dataset (hub.prefetch), read in its
    place with the same split.
    """
    name = data_cfg["dataset"]
    if is_toy(name):
        if not toy_parquet:
            raise DataError("data.dataset is 'toy' but no toy parquet was given")
        source, ds = toy_parquet, FrameRows(pl.read_parquet(toy_parquet))
    elif name in ("parquet", "json", "csv"):
        from datasets import load_dataset

        if not data_cfg["data_files"]:
            raise DataError(f"data.dataset is {name!r}: set data.data_files")
        source = data_cfg["data_files"]
        files = [source] if isinstance(source, str) else list(source)
        for f in files:
            if name in TEXT_FORMATS:
                try:
                    check_text_file(f, "data.data_files")
                except DataFileError as err:
                    raise DataError(str(err)) from None
        try:
            ds = load_dataset(name, data_files=files, split="train")
        except Exception as err:  # the loaders' errors rarely name the file
            raise DataError(
                f"data.data_files {files}: not readable as {name}: "
                f"{type(err).__name__}: {err}"
            ) from err
    elif snapshot:
        from datasets import load_dataset

        source = f"{snapshot} (snapshot of {name}):{data_cfg['split']}"
        ds = load_dataset(str(snapshot), split=data_cfg["split"])
    else:
        from datasets import load_dataset

        source = f"{name}@{data_cfg['revision'] or 'default'}:{data_cfg['split']}"
        ds = load_dataset(name, revision=data_cfg["revision"], split=data_cfg["split"])
    cols = [data_cfg[k] for k in ("question_column", "trace_column", "attempt_column")]
    missing = [c for c in cols if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; it has {ds.column_names} "
            "(set data.question_column / trace_column / attempt_column)"
        )
    if len(ds) == 0:
        raise DataError(f"{source}: the dataset has no rows")
    if data_cfg["limit"]:
        ds = ds.select(range(min(data_cfg["limit"], len(ds))))
    return ds


def duplicate_rows(rows, cols: tuple[str, ...], policy: str) -> set[int]:
    """Rows identical to an earlier one in `cols` (question, trace, attempt).

    policy "error" raises naming the first pair and the count; "skip" returns
    them to be dropped (counted in data/sft_stats.json).
    """
    first: dict[tuple, int] = {}
    dup: dict[int, int] = {}
    for i, row in enumerate(rows):
        key = tuple(row[c] for c in cols)
        if key in first:
            dup[i] = first[key]
        else:
            first[key] = i
    if dup and policy == "error":
        i, j = next(iter(dup.items()))
        raise DataError(
            f"{len(dup)} duplicate row(s): row {i} repeats row {j} in "
            f"{list(cols)} (set data.duplicate_rows: skip to drop them)"
        )
    if dup:
        log.warning("skipping %d duplicate row(s), e.g. row %d", len(dup), min(dup))
    return set(dup)


def tokenise(rows, tokenizer, data_cfg: dict) -> tuple[pl.DataFrame, dict]:
    """Format every row in the s1 chat format; labels only on the assistant turn.

    Returns the frame for data/sft.parquet and counts for data/sft_stats.json.
    """
    q_col, t_col, a_col = (
        data_cfg[k] for k in ("question_column", "trace_column", "attempt_column")
    )
    max_len = data_cfg["max_length"]
    out: dict[str, list] = {k: [] for k in ("doc", "input_ids", "labels")}
    duplicates = duplicate_rows(rows, (q_col, t_col, a_col), data_cfg["duplicate_rows"])
    stats = dict(
        rows=len(rows), empty=0, overlong=0, truncated=0, duplicates=len(duplicates)
    )
    stats["skipped"] = len(duplicates)
    for i, row in enumerate(rows):
        if i in duplicates:
            continue
        values = [row[q_col], row[t_col], row[a_col]]
        if any(v is None or not str(v).strip() for v in values):
            stats["empty"] += 1
            if data_cfg["empty_rows"] == "error":
                raise DataError(
                    f"row {i}: empty {q_col!r}, {t_col!r} or {a_col!r} "
                    "(set data.empty_rows: skip to drop such rows)"
                )
            stats["skipped"] += 1
            continue
        ex = build_example(
            tokenizer, *map(str, values), system=data_cfg["system_prompt"]
        )
        ids, labels = ex.input_ids, ex.labels
        if len(ids) > max_len:
            stats["overlong"] += 1
            if data_cfg["overlong"] == "error":
                raise DataError(
                    f"row {i}: {len(ids)} tokens > data.max_length={max_len} "
                    "(set data.overlong: truncate or skip)"
                )
            if data_cfg["overlong"] == "skip":
                stats["skipped"] += 1
                continue
            ids, labels = ids[:max_len], labels[:max_len]
            stats["truncated"] += 1
        if all(lab == IGNORE_INDEX for lab in labels):
            stats["skipped"] += 1  # truncation removed every assistant token
            continue
        out["doc"].append(i)
        out["input_ids"].append(ids)
        out["labels"].append(labels)
    if not out["doc"]:
        raise DataError(f"no usable rows left out of {len(rows)}: {stats}")
    df = pl.DataFrame(
        out,
        schema={
            "doc": pl.Int64,
            "input_ids": pl.List(pl.Int32),
            "labels": pl.List(pl.Int32),
        },
    ).with_columns(
        n_tokens=pl.col("input_ids").list.len().cast(pl.Int32),
        n_loss_tokens=(
            pl.col("labels").list.eval(pl.element() != IGNORE_INDEX).list.sum()
        ).cast(pl.Int32),
    )
    stats.update(
        kept=df.height,
        tokens=int(df["n_tokens"].sum()),
        loss_tokens=int(df["n_loss_tokens"].sum()),
        max_tokens=int(df["n_tokens"].max()),
    )
    log.info("SFT set: %s", stats)
    return df, stats
