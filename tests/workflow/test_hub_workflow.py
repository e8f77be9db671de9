"""Weights reach compute nodes once: hub.prefetch through the real workflow.

A local stand-in for the hub (tests/support/fake_hub.py) serves a tiny Qwen2 with the
toy tokenizer and an SFT set in the s1K-1.1 schema. Phase 1 runs only the
hub_fetch jobs, online; phase 2 builds the SFT set with the hub stopped and
trains the rank-1 adapter there. The test sets no HF_*_OFFLINE variable
itself: with hub.prefetch the workflow sets them for every job but
hub_fetch, which works only if every other job reads local snapshots. The
adapter must name its base by hub id and commit, not by the snapshot's path.
Snapshots are kept per endpoint: another endpoint's run fetches its own.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
import wfrun
import yaml
from conftest import make_tiny_qwen, s1k_rows
from fake_hub import COMMIT, FakeHub

from lorascope.core.components import check_existing_adapter
from lorascope.hub.names import hub_root

pytestmark = pytest.mark.timeout(900)

MODEL, DATA = "Org/TinyQwen", "Org/s1k-mini"


@pytest.fixture()
def hub_repos(tmp_path, toy_tokenizer):
    model = tmp_path / "repos" / "model"
    make_tiny_qwen(len(toy_tokenizer)).save_pretrained(model)
    toy_tokenizer.save_pretrained(model)
    data = tmp_path / "repos" / "data" / "data"
    data.mkdir(parents=True)
    pl.DataFrame(s1k_rows(12)).write_parquet(data / "train-00000-of-00001.parquet")
    return {f"models/{MODEL}": model, f"datasets/{DATA}": data.parent}


def test_prefetch_then_every_other_job_reads_local_copies(
    hub_repos, tmp_path, monkeypatch
):
    overrides = {
        "run": "hubtest",
        "model": {"base": MODEL},
        "data": {"dataset": DATA, "limit": 8},
        "hub": {"prefetch": True},
        "eval": {"benchmarks": ["math500"]},
        "steering": {"benchmark": "math500"},
    }
    with FakeHub(hub_repos) as hub:
        overrides["hub"]["endpoint"] = hub.url
        root = hub_root("hub", hub.url)  # hub/endpoints/127.0.0.1_<port>-<digest>
        snap_model = f"{root}/model/Org--TinyQwen@main"
        snap_data = f"{root}/dataset/Org--s1k-mini@main"
        work = wfrun.workdir(tmp_path / "w", overrides)
        sft = wfrun.target("data/sft.parquet", work)
        # One DAG: the SFT job waits for the two snapshots, fetched by hub_fetch.
        plan = wfrun.snakemake(work, [sft], ["-n", "--quiet", "rules"]).stdout
        assert "hub_fetch" in plan and "sft_dataset" in plan, plan
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        wfrun.snakemake(work, [snap_model, snap_data])
        fetched = {path for _, path in hub.requests}
    assert any(p.startswith(f"/api/models/{MODEL}") for p in fetched)
    record = json.loads((work / snap_model / "SNAPSHOT.json").read_text())
    assert record["repo_id"] == MODEL and "config.json" in record["files"]
    assert record["commit"] == COMMIT and record["endpoint"] == hub.url

    # Another endpoint (a mirror) reuses none of these copies: its run
    # fetches its own, into its own folder.
    mirror = {**overrides, "hub": {"prefetch": True, "endpoint": "http://mirror.test"}}
    (work / "overrides.yaml").write_text(yaml.safe_dump(mirror))
    plan = wfrun.snakemake(work, [sft], ["-n", "-p"]).stdout
    assert "rule hub_fetch" in plan and hub_root("hub", "http://mirror.test") in plan
    assert snap_model not in plan, plan
    (work / "overrides.yaml").write_text(yaml.safe_dump(overrides))

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    adapter = wfrun.target("train/rank1/adapter", work)
    wfrun.snakemake(work, [sft, adapter])  # the hub is gone: local snapshots only
    stats = json.loads((wfrun.results(work) / "data" / "sft_stats.json").read_text())
    assert stats["kept"] == 8
    log = (work / "logs" / "hubtest" / "data" / "sft_dataset.log").read_text()
    assert "Traceback" not in log
    # The adapter names its base as the hub knows it (issue 33, item 13), so
    # another machine's config importing it passes the base check.
    adapter_dir = work / adapter
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == MODEL and cfg["revision"] == COMMIT
    lora = {"r": 1, "target_modules": cfg["target_modules"]}
    check_existing_adapter(adapter_dir, lora, MODEL)
    # The workflow switched the hub off for the job, and not for hub_fetch.
    assert "hub offline: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in log
    fetch_log = work / "logs" / root / "model" / "Org--TinyQwen@main.log"
    assert "hub offline" not in fetch_log.read_text()
