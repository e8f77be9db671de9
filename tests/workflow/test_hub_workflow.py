"""Weights reach compute nodes once: hub.prefetch through the real workflow.

A local stand-in for the hub (tests/support/fake_hub.py) serves a tiny Qwen2 with the
toy tokenizer and an SFT set in the s1K-1.1 schema. Phase 1 runs only the
hub_fetch jobs, online; phase 2 builds the SFT set with the hub stopped. The
test sets no HF_*_OFFLINE variable itself: with hub.prefetch the workflow sets
them for every job but hub_fetch, which works only if every other job reads
local snapshots.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
import wfrun
from conftest import make_tiny_qwen, s1k_rows
from fake_hub import FakeHub

pytestmark = pytest.mark.timeout(900)

MODEL, DATA = "Org/TinyQwen", "Org/s1k-mini"
SNAP_MODEL = "hub/model/Org--TinyQwen@main"
SNAP_DATA = "hub/dataset/Org--s1k-mini@main"


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
        work = wfrun.workdir(tmp_path / "w", overrides)
        sft = wfrun.target("data/sft.parquet", work)
        # One DAG: the SFT job waits for the two snapshots, fetched by hub_fetch.
        plan = wfrun.snakemake(work, [sft], ["-n", "--quiet", "rules"]).stdout
        assert "hub_fetch" in plan and "sft_dataset" in plan, plan
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        wfrun.snakemake(work, [SNAP_MODEL, SNAP_DATA])
        fetched = {path for _, path in hub.requests}
    assert any(p.startswith(f"/api/models/{MODEL}") for p in fetched)
    record = json.loads((work / SNAP_MODEL / "SNAPSHOT.json").read_text())
    assert record["repo_id"] == MODEL and "config.json" in record["files"]

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    wfrun.snakemake(work, [sft])  # the hub is gone: local snapshots only
    stats = json.loads((wfrun.results(work) / "data" / "sft_stats.json").read_text())
    assert stats["kept"] == 8
    log = (work / "logs" / "hubtest" / "data" / "sft_dataset.log").read_text()
    assert "Traceback" not in log
    # The workflow switched the hub off for the job, and not for hub_fetch.
    assert "hub offline: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in log
    fetch_log = work / "logs" / "hub" / "model" / "Org--TinyQwen@main.log"
    assert "hub offline" not in fetch_log.read_text()
