"""Benchmark loaders on small files written in each dataset's hub schema."""

import csv
import json

import polars as pl
import pytest

from lorascope.evaluation.benchmarks import (
    BENCHMARKS,
    SCHEMA,
    eval_keys,
    load_benchmark,
    validate_benchmark,
)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def aime_file(tmp_path):
    # simplescaling/aime24_nofigures: id int64, problem, solution, answer str, url
    rows = [
        {
            "id": 60 + i,
            "problem": f"Find the number of ways, part {i}.",
            "solution": "Long worked solution ... $\\boxed{025}$",
            "answer": ans,
            "url": f"https://artofproblemsolving.com/wiki/{i}",
        }
        for i, ans in enumerate(["025", "204", "113"])
    ]
    return _write_jsonl(tmp_path / "aime24_nofigures.jsonl", rows)


@pytest.fixture
def math_file(tmp_path):
    # HuggingFaceH4/MATH-500 test.jsonl
    rows = [
        {
            "problem": "Convert the point $(0,3)$ to polar coordinates.",
            "solution": "... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$",
            "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
            "subject": "Precalculus",
            "level": 2,
            "unique_id": "test/precalculus/807.json",
        },
        {
            "problem": "Who ran the farthest?",
            "solution": "... \\boxed{\\text{Evelyn}}",
            "answer": "\\text{Evelyn}",
            "subject": "Algebra",
            "level": 2,
            "unique_id": "test/algebra/1349.json",
        },
    ]
    return _write_jsonl(tmp_path / "test.jsonl", rows)


GPQA_COLUMNS = [
    "Pre-Revision Question",
    "Pre-Revision Correct Answer",
    "Pre-Revision Incorrect Answer 1",
    "Pre-Revision Incorrect Answer 2",
    "Pre-Revision Incorrect Answer 3",
    "Pre-Revision Explanation",
    "Self-reported question-writing time (minutes)",
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "Explanation",
    "Revision Comments (from Question Writer)",
    "Subdomain",
    "Writer's Difficulty Estimate",
    "Extra Revised Question",
    "Record ID",
    "High-level domain",
]


@pytest.fixture
def gpqa_file(tmp_path):
    path = tmp_path / "gpqa_diamond.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=GPQA_COLUMNS)
        w.writeheader()
        for i in range(12):
            row = dict.fromkeys(GPQA_COLUMNS, "")
            row.update(
                {
                    "Question": f"Synthetic question {i}?",
                    "Correct Answer": f"right {i}",
                    "Incorrect Answer 1": f"wrong a{i}",
                    "Incorrect Answer 2": f"wrong b{i}",
                    "Incorrect Answer 3": f"wrong c{i}",
                    "Record ID": f"rec{i:04d}",
                    "Self-reported question-writing time (minutes)": "20.0",
                }
            )
            w.writerow(row)
    return path


def test_aime_loader_normalises_schema(aime_file):
    df = load_benchmark("aime24", data_files=aime_file)
    assert df.schema == pl.Schema(SCHEMA)
    assert df["id"].to_list() == ["60", "61", "62"]
    assert df["answer"].to_list() == ["025", "204", "113"]
    assert set(df["grader"]) == {"math"}
    assert df["choices"].null_count() == 3


def test_math500_loader_uses_unique_id(math_file):
    df = load_benchmark("math500", data_files=math_file, limit=1)
    assert df["id"].to_list() == ["test/precalculus/807.json"]
    assert df["answer"][0] == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_gpqa_shuffle_is_seeded_and_keeps_the_right_answer(gpqa_file):
    a = load_benchmark("gpqa_diamond", data_files=gpqa_file, seed=3)
    b = load_benchmark("gpqa_diamond", data_files=gpqa_file, seed=3)
    c = load_benchmark("gpqa_diamond", data_files=gpqa_file, seed=4)
    assert a.equals(b)
    assert not a["answer"].equals(c["answer"])
    assert a["grader"].unique().to_list() == ["choice"]
    for i, (choices, letter, problem) in enumerate(
        a.select("choices", "answer", "problem").rows()
    ):
        assert sorted(choices) == sorted(
            [f"right {i}", f"wrong a{i}", f"wrong b{i}", f"wrong c{i}"]
        )
        assert choices["ABCD".index(letter)] == f"right {i}"
        assert f"({letter}) right {i}" in problem
    # Not always the same letter: the shuffle really moves the right answer.
    assert a["answer"].n_unique() > 1
    # A limited run sees exactly the first rows of the full run.
    assert load_benchmark("gpqa_diamond", data_files=gpqa_file, seed=3, limit=5).equals(
        a.head(5)
    )


def test_only_benchmarks_that_shuffle_options_read_the_choice_seed(
    aime_file, math_file, gpqa_file
):
    """eval_keys (what rule bench_prepare declares) names choice_seed exactly
    where the frame depends on it, so a new seed reruns GPQA only (item 6)."""
    files = {"aime24": aime_file, "math500": math_file, "gpqa_diamond": gpqa_file}
    assert set(files) == set(BENCHMARKS)
    for name, path in files.items():
        a = load_benchmark(name, data_files=path, seed=0)
        b = load_benchmark(name, data_files=path, seed=1)
        assert ("choice_seed" in eval_keys(name)) == (not a.equals(b)), name
    assert "choice_seed" not in eval_keys("toy_add2")
    assert {"limit", "duplicate_rows"} <= set(eval_keys("toy_add2"))


def test_gpqa_without_token_fails_clearly(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(RuntimeError, match="gated.*HF_TOKEN"):
        load_benchmark("gpqa_diamond")


def test_missing_hub_column_is_named(tmp_path):
    path = _write_jsonl(tmp_path / "x.jsonl", [{"problem": "p", "answer": "1"}])
    with pytest.raises(ValueError, match=r"aime24.*missing columns \['id'\]"):
        load_benchmark("aime24", data_files=path)


def test_toy_benchmark_passes_through(tmp_path):
    df = pl.DataFrame(
        {
            "id": ["t0", "t1"],
            "problem": ["12+30", "1+1"],
            "answer": ["42", "2"],
            "choices": [None, None],
            "grader": ["math", "exact"],
        },
        schema=SCHEMA,
    )
    df.write_parquet(tmp_path / "toy_add2.parquet")
    assert load_benchmark("toy_add2", toy_dir=tmp_path).equals(df)
    with pytest.raises(FileNotFoundError, match="toy_add9"):
        load_benchmark("toy_add9", toy_dir=tmp_path)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"answer": ["42", " "]}, "empty 'answer' in row 1"),
        ({"id": ["t0", "t0"]}, "duplicate id 't0'"),
        ({"grader": ["math", "regex"]}, "row 1 has unknown grader 'regex'"),
        (
            {
                "grader": ["math", "choice"],
                "choices": [None, ["x", "y"]],
                "answer": ["1", "C"],
            },
            "choice row 1 has answer 'C'",
        ),
    ],
)
def test_validation_names_the_row(change, message):
    data = {
        "id": ["t0", "t1"],
        "problem": ["a", "b"],
        "answer": ["42", "2"],
        "choices": [None, None],
        "grader": ["math", "math"],
    }
    data.update(change)
    with pytest.raises(ValueError, match=message):
        validate_benchmark(pl.DataFrame(data, schema=SCHEMA), "toy_x")


def test_unknown_benchmark_lists_known():
    with pytest.raises(ValueError, match="unknown benchmark 'aime25'.*math500"):
        load_benchmark("aime25")


@pytest.mark.parametrize("row", [{"answer": None}, {}], ids=["null", "missing"])
def test_missing_gold_answer_names_benchmark_and_row(math_file, row):
    rows = [json.loads(line) for line in math_file.read_text().splitlines()]
    rows[1].pop("answer")
    rows[1] |= row
    _write_jsonl(math_file, rows)
    with pytest.raises(
        ValueError, match="benchmark 'math500' .* row 1 has no 'answer'"
    ):
        load_benchmark("math500", data_files=math_file)


def test_empty_or_undecodable_benchmark_file_is_named(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match=r"eval.benchmark_files.math500: .* is empty"):
        load_benchmark("math500", data_files=path)
    path.write_bytes(b'{"problem": "\xff"}\n')
    with pytest.raises(ValueError, match=r"byte offset 13 \(line 1\)"):
        load_benchmark("math500", data_files=path)


def test_duplicate_rows_error_or_skip(math_file):
    rows = [json.loads(line) for line in math_file.read_text().splitlines()]
    _write_jsonl(math_file, [*rows, rows[0] | {"unique_id": "test/copy.json"}])
    with pytest.raises(
        ValueError, match=r"duplicate problem and answer in row 2 \(first in row 0\)"
    ):
        load_benchmark("math500", data_files=math_file)
    df = load_benchmark("math500", data_files=math_file, duplicates="skip")
    assert df["id"].to_list() == [r["unique_id"] for r in rows]


def _normalised_rows():
    return [
        {"id": "a", "problem": "What is 2+3?", "answer": "5", "grader": "math"},
        {"id": "b", "problem": "Name the colour.", "answer": "red", "grader": "exact"},
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_local_benchmark_in_the_normalised_schema_under_any_name(tmp_path, suffix):
    """A file already in the normalised schema is a benchmark under any name,
    with no registry entry (choices may be left out)."""
    path = tmp_path / f"mine{suffix}"
    frame = pl.DataFrame(_normalised_rows())
    frame.write_parquet(path) if suffix == ".parquet" else frame.write_ndjson(path)
    df = load_benchmark("my_algebra", data_files=path)
    assert df["id"].to_list() == ["a", "b"]
    assert df.schema == SCHEMA and df["choices"].null_count() == 2


def test_local_benchmark_missing_a_column_names_key_and_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    pl.DataFrame(_normalised_rows()).drop("grader").write_ndjson(path)
    with pytest.raises(ValueError, match=r"eval.benchmark_files.my_algebra: .*grader"):
        load_benchmark("my_algebra", data_files=path)


def test_local_benchmark_name_passes_the_config_checks(tmp_path):
    """eval.benchmarks may name it; an unknown name without a file still fails."""
    from lorascope.core.config import ConfigError, validate

    path = tmp_path / "mine.parquet"
    pl.DataFrame(_normalised_rows()).write_parquet(path)
    files = {"benchmark_files": {"my_algebra": str(path)}}
    ok = {"eval": {"benchmarks": ["my_algebra"], **files}}
    registry = lambda: ["aime24", "math500"]  # noqa: E731
    validate(ok, benchmarks=registry)
    with pytest.raises(ConfigError, match="unknown benchmark 'other'"):
        validate({"eval": {"benchmarks": ["other"], **files}}, benchmarks=registry)
