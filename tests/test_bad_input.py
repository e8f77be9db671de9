"""Bad input through the real workflow: it fails clearly, naming what is wrong,
before any job runs (config) or before anything depends on it (data, adapter).

Module-level checks of the same functions live in the stages' own tests;
these go through `snakemake` in a temp dir, as a user would.
"""

import json

import polars as pl
import pytest
import wfrun
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize(
    "overrides, names",
    [
        ({"train": {"lora": {"rank": 1}}}, ["train.lora", "rank", "unknown key"]),
        ({"train": {"lora": {"r": 0}}}, ["train.lora.r", "minimum of 1"]),
        ({"model": {"base": "/nonexistent/qwen"}}, ["model.base", "/nonexistent/qwen"]),
    ],
    # Wrong types and negative learning rates go through the same validator:
    # tests/test_config.py covers them (and more) without a snakemake process.
    ids=["unknown-key", "rank-0", "missing-model-path"],
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


# --- dataset problems (through the data rule) -------------------------------
# The error texts, and the error/skip/truncate modes for empty and over-long
# rows, are covered without snakemake in tests/test_chat_data.py; these check
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


# --- adapters that do not match the rank-1 contract --------------------------


def corrupt_adapter(adapter_dir, rank=None, drop_module=None):
    """Rewrite a trained PEFT adapter in place with another rank or without
    one target module (both files consistent, as a foreign adapter would be)."""
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if rank is not None:
        weights = {
            k: (v.repeat(rank, 1) if "lora_A" in k else v.repeat(1, rank))
            for k, v in weights.items()
        }
        cfg["r"] = rank
    if drop_module is not None:
        weights = {k: v for k, v in weights.items() if f".{drop_module}." not in k}
        cfg["target_modules"] = [m for m in cfg["target_modules"] if m != drop_module]
    save_file(weights, adapter_dir / "adapter_model.safetensors")
    (adapter_dir / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "change, names",
    [({"rank": 2}, ["rank", "2"]), ({"drop_module": "up_proj"}, ["up_proj"])],
    ids=["rank-2", "missing-up_proj"],
)
def test_adapter_not_rank1_rejected_downstream(
    tmp_path, tmp_path_factory, change, names
):
    """Swap the trained adapter for a non-conforming one; the first consumer
    (the component table, before extraction) must fail naming the problem."""
    # A copy of the session's shared seed-0 micro run (test_faults uses it too).
    reference = wfrun.reference_run(tmp_path_factory.getbasetemp())
    work = wfrun.clone(
        reference, tmp_path / "w", ["toy", "data", "train/rank1/adapter"]
    )
    out = wfrun.results(work)
    adapter = out / "train" / "rank1" / "adapter"
    corrupt_adapter(adapter, **change)
    manifest = out / "activations" / "manifest.json"
    # Touch nothing else: snakemake must not retrain (the adapter is newer,
    # not missing), so the consumer sees the swapped adapter.
    proc = wfrun.snakemake(
        work, [manifest], extra=["--rerun-triggers", "mtime"], check=False
    )
    assert proc.returncode != 0, "a non-rank-1 adapter was accepted"
    logs = "".join(p.read_text() for p in (work / "logs").rglob("*.log"))
    for name in names:
        assert name in logs, f"{name!r} not in the logs:\n{logs[-3000:]}"
    assert not manifest.exists()


# --- config errors on a finished run -----------------------------------------


def test_config_errors_keep_a_finished_run_intact(tmp_path, tmp_path_factory):
    """An SAE k wider than the SAE and a toy benchmark nobody defined are
    rejected while parsing, naming the keys: no job starts, so the finished
    SAE and tables (which a failing job would have deleted) stay."""
    reference = wfrun.reference_run(tmp_path_factory.getbasetemp())
    bad = {"sae": {"k": 1000}, "eval": {"benchmarks": ["toy_add9"]}}
    work = wfrun.clone(reference, tmp_path / "w", ["sae", "tables"], bad)
    before = {p: p.stat().st_mtime_ns for p in wfrun.results(work).rglob("*")}
    proc = wfrun.snakemake(work, ["all"], check=False, timeout=300)
    assert proc.returncode != 0
    assert "sae.k: 1000 is larger than the SAE width 224" in proc.stderr
    assert "eval.benchmarks: 'toy_add9' is not defined in toy.benchmarks" in (
        proc.stderr
    )
    after = {p: p.stat().st_mtime_ns for p in wfrun.results(work).rglob("*")}
    assert after == before and (wfrun.results(work) / "sae/model").is_dir()
    assert not (work / "logs").exists()


def test_missing_api_key_rejected_before_any_job(
    tmp_path, tmp_path_factory, monkeypatch
):
    monkeypatch.delenv("LS_NO_SUCH_KEY", raising=False)
    reference = wfrun.reference_run(tmp_path_factory.getbasetemp())
    llm = {"provider": "openai", "api_key_env": "LS_NO_SUCH_KEY"}
    work = wfrun.clone(
        reference,
        tmp_path / "w",
        ["toy", "data", "train/rank1/adapter", "components.parquet", "activations"]
        + ["features"],
        {"autointerp": llm},
    )
    target = [wfrun.target("autointerp/explanations/lora.parquet")]
    dry = wfrun.snakemake(work, target, extra=["-n"], check=False, timeout=300)
    assert dry.returncode == 0, "a dry run needs no key"
    proc = wfrun.snakemake(work, target, check=False, timeout=300)
    assert proc.returncode != 0
    assert "autointerp.api_key_env" in proc.stderr and "LS_NO_SUCH_KEY" in proc.stderr
    assert not list((work / "logs").rglob("*.log")), "a job ran before the check"
