"""Bad input on a finished run, through the real workflow: an adapter that
breaks the rank-1 contract fails its first consumer, naming the problem;
config errors and a missing API key are rejected before any job, so nothing
already computed is lost. These copy the session's shared micro reference
run; tests/workflow/test_bad_input.py holds the ones that need no finished run (a
file each, so those run while the reference run builds).
"""

import json

import pytest
import wfrun
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.timeout(900)


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


# --- settings a job would fail on, checked before any job (item 7) -----------

SAE_KEEP = ["toy", "data", "train/rank1/adapter", "components.parquet"]
SAE_KEEP += ["activations", "sae"]


@pytest.mark.parametrize(
    "keep, target, bad, env, message",
    [
        (
            ["toy", "data", "train/rank1/adapter"],
            "train/rank1/adapter",
            {"train": {"lora": {"target_modules": ["q_proj", "foo_proj"]}}},
            {},
            "train.lora.target_modules.1: 'foo_proj' is not one of",
        ),
        (
            SAE_KEEP,
            "sae/metrics.json",
            {"sae": {"device": "cuda"}},
            {"CUDA_VISIBLE_DEVICES": ""},  # no GPU, on a GPU machine too
            "sae.device: 'cuda', but this machine has no CUDA device",
        ),
        (
            SAE_KEEP,
            "sae/metrics.json",
            {"sae": {"lr_warmup_steps": 100000}},
            {},
            "sae.lr_warmup_steps=100000 is not below the",
        ),
    ],
    ids=["target-module-typo", "sae-device-cuda", "sae-warmup-too-long"],
)
def test_bad_setting_fails_before_the_job_removes_finished_work(
    tmp_path, tmp_path_factory, monkeypatch, keep, target, bad, env, message
):
    """Each of these used to pass the config checks, start the job (Snakemake
    removes the job's finished output first) and fail in it, or train to the
    end with the typo skipped. Now each fails before any job, naming the key,
    and the finished artifact is untouched."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reference = wfrun.reference_run(tmp_path_factory.getbasetemp())
    work = wfrun.clone(reference, tmp_path / "w", keep, bad)
    out = wfrun.results(work)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    proc = wfrun.snakemake(work, [wfrun.target(target)], check=False, timeout=300)
    assert proc.returncode != 0, "the bad setting was accepted"
    assert message in proc.stderr, proc.stderr[-3000:]
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert after == before, "finished artifacts were removed or rewritten"
    assert (out / target).exists()
    assert not list((work / "logs").rglob("*.log")), "a job ran before the check"
