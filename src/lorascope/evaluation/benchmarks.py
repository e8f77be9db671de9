"""Benchmark registry and loaders, normalised to one schema (rule `bench_prepare`).

Every benchmark becomes a frame with columns
`id:str, problem:str, answer:str, choices:list[str] (null unless multiple
choice), grader:str ("math" | "choice" | "exact")`.

Paper-scale benchmarks load through `datasets.load_dataset` from the hub (or
from local files in the hub's own schema via `data_files`, which the tests
use). `toy_*` benchmarks are written by the toy world already normalised and
are only validated here. GPQA rows are gated content: this module never logs
or prints a row, only counts.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from lorascope.core.io import TEXT_FORMATS, check_text_file
from lorascope.core.names import is_toy_benchmark

__all__ = [
    "BENCHMARKS",
    "SCHEMA",
    "BenchmarkSpec",
    "eval_keys",
    "load_benchmark",
    "validate_benchmark",
]

SCHEMA = {
    "id": pl.String,
    "problem": pl.String,
    "answer": pl.String,
    "choices": pl.List(pl.String),
    "grader": pl.String,
}
LETTERS = "ABCDEFGHIJ"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives on the hub and how its rows map to SCHEMA."""

    hub_id: str
    config: str | None
    split: str
    file_format: str  # `load_dataset` builder for local files in the hub schema
    columns: tuple[str, ...]  # hub columns the mapper reads
    to_rows: Callable[[list[dict], int], list[dict]]
    gated: bool = False
    shuffles_choices: bool = False  # to_rows reads its seed (eval.choice_seed)


def _math_rows(id_col: str) -> Callable[[list[dict], int], list[dict]]:
    def to_rows(raw: list[dict], seed: int) -> list[dict]:
        return [
            {
                "id": str(r[id_col]),
                "problem": r["problem"],
                "answer": str(r["answer"]).strip(),
                "choices": None,
                "grader": "math",
            }
            for r in raw
        ]

    return to_rows


def format_choices(question: str, choices: list[str]) -> str:
    """The question followed by lettered options, one per line."""
    letters = LETTERS[: len(choices)]
    lines = [f"({x}) {text}" for x, text in zip(letters, choices, strict=True)]
    return question.strip() + "\n\n" + "\n".join(lines)


def _gpqa_rows(raw: list[dict], seed: int) -> list[dict]:
    # One generator for the whole set so each row's order depends only on the
    # seed and its position: reruns and every model variant see the same order.
    rng = random.Random(seed)
    rows = []
    for r in raw:
        options = [r["Correct Answer"]] + [
            r[f"Incorrect Answer {i}"] for i in (1, 2, 3)
        ]
        options = [str(o).strip() for o in options]
        order = list(range(4))
        rng.shuffle(order)
        choices = [options[i] for i in order]
        rows.append(
            {
                "id": str(r["Record ID"]),
                "problem": format_choices(str(r["Question"]), choices),
                "answer": LETTERS[order.index(0)],
                "choices": choices,
                "grader": "choice",
            }
        )
    return rows


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "aime24": BenchmarkSpec(
        "simplescaling/aime24_nofigures",
        None,
        "train",
        "json",
        ("id", "problem", "answer"),
        _math_rows("id"),
    ),
    "math500": BenchmarkSpec(
        "HuggingFaceH4/MATH-500",
        None,
        "test",
        "json",
        ("unique_id", "problem", "answer"),
        _math_rows("unique_id"),
    ),
    "gpqa_diamond": BenchmarkSpec(
        "Idavidrein/gpqa",
        "gpqa_diamond",
        "train",
        "csv",
        (
            "Record ID",
            "Question",
            "Correct Answer",
            "Incorrect Answer 1",
            "Incorrect Answer 2",
            "Incorrect Answer 3",
        ),
        _gpqa_rows,
        gated=True,
        shuffles_choices=True,
    ),
}


def eval_keys(name: str) -> tuple[str, ...]:
    """The `eval` keys preparing benchmark `name` reads: `choice_seed` only
    where options are shuffled (GPQA), so changing it reruns nothing of a
    math or toy benchmark."""
    spec = BENCHMARKS.get(name)
    seeded = ("choice_seed",) if spec and spec.shuffles_choices else ()
    return ("limit", "duplicate_rows", *seeded)


def _drop_duplicates(df: pl.DataFrame, name: str, policy: str) -> pl.DataFrame:
    """Rows repeating an earlier id, or an earlier problem and answer: an error
    naming the rows and the count, or dropped (policy skip) and logged."""
    indexed = df.with_row_index()
    dup = indexed.filter(
        pl.col("id").is_duplicated() & ~pl.col("id").is_first_distinct()
        | ~pl.struct("problem", "answer").is_first_distinct()
    )
    if dup.height == 0:
        return df
    row = dup.row(0, named=True)
    first = indexed.filter(
        (pl.col("id") == row["id"])
        | (pl.col("problem") == row["problem"]) & (pl.col("answer") == row["answer"])
    )["index"][0]
    what = (
        f"duplicate id {row['id']!r}"
        if indexed["id"][first] == row["id"]
        else "duplicate problem and answer"
    )
    if policy == "error":
        raise ValueError(
            f"benchmark {name!r}: {what} in row {row['index']} (first in row "
            f"{first}); {dup.height} duplicate row(s) in all (set "
            "eval.duplicate_rows: skip to drop them)"
        )
    log.warning("benchmark %r: dropped %d duplicate row(s)", name, dup.height)
    return indexed.filter(~pl.col("index").is_in(dup["index"].implode())).drop("index")


def validate_benchmark(
    df: pl.DataFrame, name: str, duplicates: str = "error"
) -> pl.DataFrame:
    """Check a normalised frame; errors name the benchmark, column and row.

    `duplicates`: "error" or "skip" (eval.duplicate_rows)."""
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        raise ValueError(f"benchmark {name!r}: missing columns {missing}")
    if df.height == 0:
        raise ValueError(f"benchmark {name!r}: no rows")
    df = df.select(list(SCHEMA)).cast(SCHEMA)
    for col in ("id", "problem", "answer", "grader"):
        bad = df.with_row_index().filter(
            pl.col(col).is_null() | (pl.col(col).str.strip_chars() == "")
        )
        if bad.height:
            raise ValueError(
                f"benchmark {name!r}: empty {col!r} in row {bad['index'][0]}"
            )
    df = _drop_duplicates(df, name, duplicates)
    bad = df.with_row_index().filter(
        ~pl.col("grader").is_in(["math", "choice", "exact"])
    )
    if bad.height:
        raise ValueError(
            f"benchmark {name!r}: row {bad['index'][0]} has unknown grader "
            f"{bad['grader'][0]!r}"
        )
    choice = df.with_row_index().filter(pl.col("grader") == "choice")
    no_choices = choice.filter(pl.col("choices").list.len().fill_null(0) < 2)
    if no_choices.height:
        raise ValueError(
            f"benchmark {name!r}: choice row {no_choices['index'][0]} has < 2 choices"
        )
    for i, choices, answer in choice.select("index", "choices", "answer").rows():
        if len(answer) != 1 or answer not in LETTERS[: len(choices)]:
            raise ValueError(
                f"benchmark {name!r}: choice row {i} has answer {answer!r}, not one "
                f"of its letters {LETTERS[: len(choices)]}"
            )
    return df


def _read_normalised(name: str, path: str | Path) -> pl.DataFrame:
    """A local benchmark under a name the registry does not know: a parquet or
    JSON-lines file already in SCHEMA, used as it is (choices in the order
    given; `choices` may be left out when no row is multiple choice)."""
    where = f"eval.benchmark_files.{name}"
    path = Path(path)
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
    elif path.suffix in (".jsonl", ".json"):
        check_text_file(path, where)
        df = pl.read_ndjson(path)
    else:
        raise ValueError(
            f"{where}: {path} is not a registry benchmark's file, so it must be "
            f"in the normalised schema ({', '.join(SCHEMA)}) as .parquet or .jsonl"
        )
    missing = [c for c in SCHEMA if c not in df.columns and c != "choices"]
    if missing:
        raise ValueError(f"{where}: {path} has no column(s) {missing}")
    if "choices" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=SCHEMA["choices"]).alias("choices"))
    return df


def _load_raw(
    name: str, spec: BenchmarkSpec, data_files: str | None, snapshot: str | None
) -> list[dict]:
    from datasets import load_dataset  # heavy import, only when loading

    if snapshot is not None:  # a local copy of the hub repo (hub.prefetch)
        ds = load_dataset(str(snapshot), spec.config, split=spec.split)
    elif data_files is not None:
        if spec.file_format in TEXT_FORMATS:
            check_text_file(data_files, f"eval.benchmark_files.{name}")
        try:
            ds = load_dataset(
                spec.file_format, data_files=str(data_files), split="train"
            )
        except Exception as err:  # the loaders' errors rarely name the file
            raise ValueError(
                f"eval.benchmark_files.{name}: {data_files} is not readable as "
                f"{spec.file_format}: {type(err).__name__}: {err}"
            ) from err
    else:
        token = os.environ.get("HF_TOKEN") if spec.gated else None
        if spec.gated and not token:
            raise RuntimeError(
                f"benchmark {name!r} ({spec.hub_id}) is gated: accept its terms on "
                "the hub and export HF_TOKEN, or set eval.benchmark_files"
            )
        ds = load_dataset(spec.hub_id, spec.config, split=spec.split, token=token)
    missing = [c for c in spec.columns if c not in ds.column_names]
    if missing:
        src = data_files or spec.hub_id
        raise ValueError(f"benchmark {name!r} from {src}: missing columns {missing}")
    if len(ds) == 0:
        raise ValueError(
            f"benchmark {name!r} from {data_files or spec.hub_id}: no rows"
        )
    rows = ds.select_columns(list(spec.columns)).to_list()
    # A null gold answer would become the string "None" and be graded wrong.
    for i, r in enumerate(rows):
        for col in spec.columns:
            if r[col] is None:
                raise ValueError(
                    f"benchmark {name!r} from {data_files or spec.hub_id}: row {i} "
                    f"has no {col!r} (null or missing)"
                )
    return rows


def load_benchmark(
    name: str,
    *,
    data_files: str | Path | None = None,
    toy_dir: str | Path | None = None,
    seed: int = 0,
    limit: int | None = None,
    duplicates: str = "error",
    snapshot: str | Path | None = None,
) -> pl.DataFrame:
    """Load benchmark `name` as a normalised, validated frame.

    `data_files`: a local file in the hub's schema instead of the hub.
    `toy_dir`: folder holding `toy_*.parquet` files. `seed` fixes the
    multiple-choice shuffle; `limit` keeps the first n rows (after shuffling,
    so a limited run sees the same choices as a full one). `duplicates`:
    eval.duplicate_rows. `snapshot`: a local copy of the benchmark's hub repo
    (hub.prefetch), read instead of the hub.
    """
    if is_toy_benchmark(name):
        if toy_dir is None:
            raise ValueError(f"benchmark {name!r} is a toy benchmark: pass toy_dir")
        path = Path(toy_dir) / f"{name}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"toy benchmark {name!r}: {path} does not exist")
        df = pl.read_parquet(path)
    elif name in BENCHMARKS:
        spec = BENCHMARKS[name]
        df = pl.DataFrame(
            spec.to_rows(_load_raw(name, spec, data_files, snapshot), seed),
            schema=SCHEMA,
        )
    elif data_files is not None:
        df = _read_normalised(name, data_files)
    else:
        known = sorted(BENCHMARKS) + ["toy_*"]
        raise ValueError(
            f"unknown benchmark {name!r}; known: {known}, or a local file in the "
            "normalised schema under eval.benchmark_files"
        )
    df = validate_benchmark(df, name, duplicates)
    return df.head(limit) if limit else df
