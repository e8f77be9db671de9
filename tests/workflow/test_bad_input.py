"""Bad input through the real workflow: it fails clearly, naming what is wrong,
before any job runs (config) or before anything depends on it (data).

Module-level checks of the same functions live in the stages' own tests;
these go through `snakemake` in a temp dir, as a user would. Bad adapters
and config errors on a finished run: tests/workflow/test_bad_input_finished_run.py.
"""

import json

import polars as pl
import pytest
import wfrun

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize(
    "overrides, names",
    [
        ({"train": {"lora": {"rank": 1}}}, ["train.lora", "rank", "unknown key"]),
        ({"train": {"lora": {"r": 0}}}, ["train.lora.r", "minimum of 1"]),
        ({"model": {"base": "/nonexistent/qwen"}}, ["model.base", "/nonexistent/qwen"]),
        (
            {
                "train": {"lora": {"r": 2}},
                "eval": {"backend": "vllm", "vllm": {"max_lora_rank": 1}},
            },
            ["eval.vllm.max_lora_rank: 1 is below train.lora.r = 2"],
        ),
        (
            {
                "sweep": {"ranks": [1, 16]},
                "eval": {"backend": "vllm", "vllm": {"max_lora_rank": 8}},
            },
            ["sweep.ranks: [16] above eval.vllm.max_lora_rank 8"],
        ),
        # micro: train.rank1.max_steps 6
        ({"sweep": {"checkpoints": [3, 7]}}, ["sweep.checkpoints: step(s) [7]"]),
        ({"sweep": {"seeds": []}}, ["sweep.seeds"]),
    ],
    # Wrong types and negative learning rates go through the same validator:
    # tests/unit/test_config.py covers them (and more) without a snakemake process.
    ids=[
        "unknown-key",
        "rank-0",
        "missing-model-path",
        "rank-above-vllm-max",
        "sweep-rank-above-vllm-max",
        "sweep-checkpoint-beyond-training",
        "sweep-empty-axis",
    ],
)
def test_invalid_config_rejected_before_any_job(tmp_path, overrides, names):
    work = wfrun.workdir(tmp_path, overrides)
    proc = wfrun.snakemake(work, ["all"], check=False, timeout=300)
    assert proc.returncode != 0
    for name in names:
        assert name in proc.stderr, f"{name!r} not in:\n{proc.stderr[-3000:]}"
    # Nothing was scheduled, so nothing was written.
    assert not (work / "results").exists()
    assert not (work / "logs").exists()


def test_gated_benchmark_without_token_fails_before_any_job(tmp_path, monkeypatch):
    """Issue 33, item 14: the onstart check sees the scheduled bench_prepare
    of GPQA (gated) and names eval.benchmarks and HF_TOKEN before any job."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    work = wfrun.workdir(tmp_path, {"eval": {"benchmarks": ["gpqa_diamond"]}})
    target = wfrun.target("data/bench/gpqa_diamond.parquet", work)
    proc = wfrun.snakemake(work, [target], check=False, timeout=300)
    assert proc.returncode != 0
    assert "eval.benchmarks: gpqa_diamond (Idavidrein/gpqa)" in proc.stderr
    assert "HF_TOKEN is not set" in proc.stderr
    assert not (work / "results").exists() and not (work / "logs").exists()


# --- dataset problems (through the data rule) -------------------------------
# The error texts, and the error/skip/truncate modes for empty and over-long
# rows, are covered without snakemake in tests/unit/test_chat_data.py; these check
# that they reach the rule's log and that nothing is left looking finished.

S1K_COLUMNS = ["question", "deepseek_thinking_trajectory", "deepseek_attempt"]


def s1k_frame(n=6, trace_words=5):
    return pl.DataFrame(
        {
            "question": [f"What is {i} plus {i}?" for i in range(n)],
            "solution": [str(2 * i) for i in range(n)],
            "deepseek_thinking_trajectory": [
                " ".join([f"{i} plus {i} is {2 * i}."] * trace_words) for i in range(n)
            ],
            "deepseek_attempt": [f"{2 * i}" for i in range(n)],
        }
    )


def data_run(tmp_path, frame, base, **data_keys):
    """Tokenise `frame` through rule sft_dataset (tokenizer of the tiny model
    `base`: these checks need no trained toy model)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "s1k.parquet"
    frame.write_parquet(path)
    work = wfrun.workdir(
        tmp_path / "wf",
        {
            "model": {"base": str(base)},
            "data": {"dataset": "parquet", "data_files": str(path), **data_keys},
        },
    )
    target = wfrun.results(work) / "data" / "sft.parquet"
    return work, target, wfrun.snakemake(work, [target], check=False, timeout=600)


def test_dataset_missing_column_names_it(tmp_path, tiny_model_dir):
    frame = s1k_frame().drop("deepseek_attempt")
    work, target, proc = data_run(tmp_path, frame, tiny_model_dir)
    assert proc.returncode != 0
    text = proc.stderr + "".join(p.read_text() for p in (work / "logs").rglob("*.log"))
    assert "missing column(s) ['deepseek_attempt']" in text, text[-3000:]
    assert "s1k.parquet" in text  # names the file
    assert not target.exists()


def test_empty_rows_skipped_and_counted(tmp_path, tiny_model_dir):
    frame = s1k_frame().with_columns(
        pl.when(pl.int_range(pl.len()).is_in([1, 4]))
        .then(pl.lit(""))
        .otherwise(pl.col("question"))
        .alias("question")
    )
    work, target, proc = data_run(tmp_path, frame, tiny_model_dir, empty_rows="skip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sft = pl.read_parquet(target)
    assert sft["doc"].to_list() == [0, 2, 3, 5]
    stats = json.loads((target.parent / "sft_stats.json").read_text())
    assert (stats["empty"], stats["skipped"], stats["kept"]) == (2, 2, 4), stats
