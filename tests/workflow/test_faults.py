"""Faults through the real workflow: a killed job, a corrupted artifact, an
LLM API that goes down. Each run either finishes correctly on rerun or fails
naming the file, and nothing already computed is lost.

Every test starts from copies of one shared seed-0 micro run (`reference`),
so the toy model is pretrained once per session.
"""

import json

import polars as pl
import pytest
import torch
import wfrun
from fake_llm_server import FakeLLMServer
from safetensors.torch import load_file

pytestmark = pytest.mark.timeout(1800)

ADAPTER = "train/rank1/adapter"
MANIFEST = "activations/manifest.json"
UP_TO_DATA = ["toy", "data"]
UP_TO_COMPONENTS = [*UP_TO_DATA, "train/rank1/adapter", "components.parquet"]
UP_TO_ACTIVATIONS = [*UP_TO_COMPONENTS, "activations"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted seed-0 micro run (shared by the whole session)."""
    return wfrun.reference_run(tmp_path_factory.getbasetemp())


def logs_text(work):
    return "".join(p.read_text() for p in sorted((work / "logs").rglob("*.log")))


def check_rank1_adapter(adapter_dir):
    """A loadable rank-1 adapter on every target module, with finite weights."""
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert cfg["r"] == 1
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    for module in cfg["target_modules"]:
        a = [v for k, v in weights.items() if f".{module}.lora_A" in k]
        assert a and all(t.shape[0] == 1 for t in a), module
    assert all(torch.isfinite(t).all() for t in weights.values())
    return weights


# --- training killed mid-run -----------------------------------------------


def test_training_killed_resumes_from_checkpoint(reference, tmp_path):
    work = wfrun.clone(reference, tmp_path / "w", UP_TO_DATA)
    out = wfrun.results(work)
    # micro: 6 steps, a checkpoint every 3; kill once the first is complete.
    state = out / "train/rank1/checkpoints/checkpoint-3/trainer_state.json"
    proc = wfrun.run_and_kill_job(
        work, [wfrun.target(ADAPTER)], "lorascope.train", state.exists
    )
    assert proc.returncode != 0
    assert not (out / ADAPTER).exists(), "a killed run left an adapter behind"
    assert state.exists(), "the checkpoint did not survive the failed job"
    written = state.stat().st_mtime_ns

    wfrun.snakemake(work, [wfrun.target(ADAPTER)])
    # A restart (same seed, same data) gives the same weights and curve; only
    # a resumed run leaves the steps before its checkpoint alone (item 15).
    assert state.stat().st_mtime_ns == written, "checkpoint-3 rewritten: restarted"
    log = (work / "logs" / wfrun.run_name(work) / "train/train_rank1.log").read_text()
    assert "resuming from checkpoint" in log and "checkpoint-3" in log, log[-2000:]
    rows = [
        json.loads(line)
        for line in (out / ADAPTER / "train_log.jsonl").read_text().splitlines()
    ]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 7)), f"loss curve does not continue: {steps}"
    resumed = check_rank1_adapter(out / ADAPTER)
    uninterrupted = load_file(
        wfrun.results(reference) / ADAPTER / "adapter_model.safetensors"
    )
    # Resuming restores optimizer, scheduler, RNG and data position, so the
    # result matches the run that was never killed.
    assert resumed.keys() == uninterrupted.keys()
    for k in resumed:
        torch.testing.assert_close(resumed[k], uninterrupted[k], msg=k)


def test_changed_hyperparameters_do_not_resume_stale_checkpoints(reference, tmp_path):
    """A rerun caused by a config change must train anew, not pick up the old
    run's checkpoints (which would silently return the old adapter)."""
    keep = [*UP_TO_DATA, ADAPTER, "train/rank1/checkpoints"]
    work = wfrun.clone(
        reference, tmp_path / "w", keep, {"train": {"rank1": {"learning_rate": 0.05}}}
    )
    out = wfrun.results(work)
    wfrun.snakemake(work, [wfrun.target(ADAPTER)])
    new = load_file(out / ADAPTER / "adapter_model.safetensors")
    old = load_file(wfrun.results(reference) / ADAPTER / "adapter_model.safetensors")
    changed = [k for k in new if not torch.equal(new[k], old[k])]
    assert changed, "learning rate changed but the adapter is the old one"


# --- extraction killed mid-shard ---------------------------------------------


def concat_shards(results_dir):
    """Every stored token, sorted by (doc, pos), and the shard files seen."""
    from lorascope.core.shards import open_shards

    shards = open_shards(results_dir / "activations")
    parts = list(shards.iter_shards())
    doc = torch.cat([p["doc"] for p in parts])
    pos = torch.cat([p["pos"] for p in parts]).long()
    order = torch.argsort(doc * (pos.max() + 1) + pos)
    acts = torch.cat([p["acts"] for p in parts])[order]
    return doc[order], pos[order], acts, shards


def test_extraction_killed_mid_shard_rerun_completes(reference, tmp_path):
    # Small shards so the kill lands between shards of a many-shard run.
    work = wfrun.clone(
        reference,
        tmp_path / "w",
        UP_TO_COMPONENTS,
        {"activations": {"shard_tokens": 256}},
    )
    out = wfrun.results(work)
    shard_dir = out / "activations" / "shards"
    proc = wfrun.run_and_kill_job(
        work,
        [wfrun.target(MANIFEST)],
        "activations_extract",
        lambda: len(list(shard_dir.glob("shard-*.json"))) >= 2,
    )
    assert proc.returncode != 0
    assert not (out / MANIFEST).exists()

    wfrun.snakemake(work, [wfrun.target(MANIFEST)])
    doc, pos, acts, shards = concat_shards(out)
    ref_doc, ref_pos, ref_acts, _ = concat_shards(wfrun.results(reference))
    assert len(shards.manifest["shards"]) > 2
    # No token twice, none missing, same values as the uninterrupted run.
    assert torch.equal(doc, ref_doc) and torch.equal(pos, ref_pos)
    torch.testing.assert_close(acts, ref_acts)
    # No partial file survives beside the committed shards.
    listed = {rec["file"].split("/")[-1] for rec in shards.manifest["shards"]}
    stray = [
        p.name
        for p in shard_dir.glob("*.safetensors")
        if p.name not in listed and p.name.split(".")[0] + ".safetensors" not in listed
    ]
    assert not stray, f"partial shard files left: {stray}"


# --- corrupted artifacts -----------------------------------------------------


def flip_bytes(path, at=0.5, n=64):
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i : i + n] = bytes(b ^ 0xFF for b in data[i : i + n])
    path.write_bytes(bytes(data))


def test_corrupted_shard_named_before_sae_uses_it(reference, tmp_path):
    work = wfrun.clone(reference, tmp_path / "w", UP_TO_ACTIVATIONS)
    out = wfrun.results(work)
    shard = sorted((out / "activations" / "shards").glob("shard-*.safetensors"))[0]
    flip_bytes(shard)
    target = wfrun.target("sae/metrics.json")
    proc = wfrun.snakemake(
        work, [target], extra=["--rerun-triggers", "mtime"], check=False
    )
    assert proc.returncode != 0, "training an SAE on a corrupted shard succeeded"
    assert shard.name in logs_text(work) + proc.stderr
    assert not (work / target).exists()
    assert not (out / "sae" / "model").exists()


def test_corrupted_adapter_named_before_extraction(reference, tmp_path):
    work = wfrun.clone(reference, tmp_path / "w", [*UP_TO_DATA, ADAPTER])
    out = wfrun.results(work)
    weights = out / ADAPTER / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    proc = wfrun.snakemake(
        work, [wfrun.target(MANIFEST)], extra=["--rerun-triggers", "mtime"], check=False
    )
    assert proc.returncode != 0, "a truncated adapter was accepted"
    text = logs_text(work) + proc.stderr
    assert "adapter_model.safetensors" in text, text[-3000:]
    assert not (out / MANIFEST).exists()


# --- LLM API down midway through autointerp ----------------------------------


def test_llm_down_midway_then_rerun_calls_only_missing(
    reference, tmp_path, monkeypatch
):
    target = wfrun.target("autointerp/explanations/lora.parquet")
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")
    with FakeLLMServer() as server:
        work = wfrun.clone(
            reference,
            tmp_path / "w",
            UP_TO_ACTIVATIONS,
            {
                "autointerp": {
                    "provider": "openai",
                    "model": "fake-model",
                    "base_url": server.openai_url,
                    "api_key_env": "FAKE_LLM_KEY",
                    "concurrency": 1,
                    "retries": 1,
                    "backoff_base_s": 0.01,
                    "backoff_max_s": 0.05,
                    "timeout_s": 5,
                }
            },
        )
        down_at = 4

        def go_down(n):
            if n == down_at:
                server.down = True

        server.on_request = go_down
        proc = wfrun.snakemake(work, [target], check=False)
        assert proc.returncode != 0, "autointerp finished although the API was down"
        text = logs_text(work) + proc.stderr
        assert "500" in text or "unavailable" in text.lower(), text[-3000:]
        assert not (work / target).exists()
        answered = {
            json.dumps(b["messages"]) for _, b in server.requests[: down_at - 1]
        }
        first_run = len(server.requests)

        server.down, server.on_request = False, None
        wfrun.snakemake(work, [target])
        rerun = [json.dumps(b["messages"]) for _, b in server.requests[first_run:]]
    assert not answered & set(rerun), "the rerun paid again for cached answers"
    assert rerun and len(rerun) == len(set(rerun)), "rerun repeated a prompt"
    assert pl.read_parquet(work / target).height > 0
