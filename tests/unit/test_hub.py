"""Hub snapshots: fetched once, from a local stand-in for the hub."""

from __future__ import annotations

import pytest
from fake_hub import COMMIT, FakeHub

from lorascope.hub.fetch import fetch_snapshot, read_snapshot
from lorascope.hub.names import (
    hub_root,
    parse_snapshot_name,
    public_url,
    snapshot_name,
)


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """The suite runs offline (conftest); these tests talk to a local hub."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)


@pytest.fixture()
def repos(tmp_path):
    model = tmp_path / "repo_model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    (model / "sub" / "weights.bin").write_bytes(b"\x00" * 1000)
    data = tmp_path / "repo_data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"question": "q"}\n')
    return {"models/Org/Model": model, "datasets/Org/Gated": data}


def test_snapshot_names_round_trip():
    name = snapshot_name("Qwen/Qwen2.5-32B-Instruct", None)
    assert name == "Qwen--Qwen2.5-32B-Instruct@main"
    assert parse_snapshot_name(name) == ("Qwen/Qwen2.5-32B-Instruct", "main")
    with pytest.raises(ValueError, match="expected 'org/name'"):
        snapshot_name("no-org", None)


def test_snapshots_are_keyed_by_endpoint(monkeypatch):
    """Copies from a mirror or a local stand-in never pass for huggingface.co's
    (or each other's); credentials in the URL reach neither path nor record."""
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_root("hub", None) == hub_root("hub", "https://huggingface.co/") == "hub"
    mirror = hub_root("hub", "https://hf-mirror.com")
    local = hub_root("hub", "http://127.0.0.1:8123")
    other_port = hub_root("hub", "http://127.0.0.1:8124")
    assert len({mirror, local, other_port, "hub"}) == 4
    assert mirror.startswith("hub/endpoints/hf-mirror.com-")
    assert local.startswith("hub/endpoints/127.0.0.1_8123-")
    with_password = "https://alice:s3cret@hf-mirror.com"
    assert hub_root("hub", with_password) == mirror
    assert public_url(with_password) == "https://hf-mirror.com"
    # no hub.endpoint: HF_ENDPOINT, which huggingface_hub itself reads
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8123/")
    assert hub_root("hub", None) == local


def test_fetch_writes_the_snapshot_and_its_commit(repos, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    dest = tmp_path / "hub" / "model" / snapshot_name("Org/Model", "main")
    with FakeHub(repos) as hub:
        record = fetch_snapshot("Org/Model", "model", dest, endpoint=hub.url)
    assert (dest / "sub" / "weights.bin").read_bytes() == b"\x00" * 1000
    assert read_snapshot(dest) == record
    assert read_snapshot(tmp_path) is None  # not a snapshot
    # which commit `main` was, and where it came from (issue 33, item 13)
    assert record["revision"] == "main" and record["endpoint"] == hub.url
    assert record["commit"] == COMMIT and record["files"] == [
        "config.json",
        "sub/weights.bin",
    ]
    assert not (dest / ".cache").exists()


def test_gated_repo_needs_the_token_and_fails_cleanly(repos, tmp_path, monkeypatch):
    dest = tmp_path / "hub" / "dataset" / "Org--Gated@main"
    with FakeHub(repos, gated={"datasets/Org/Gated"}, token="hf_secret") as hub:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        with pytest.raises(RuntimeError, match="export HF_TOKEN"):
            fetch_snapshot("Org/Gated", "dataset", dest, endpoint=hub.url, gated=True)
        assert hub.requests == []  # failed before asking anything
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        with pytest.raises(Exception, match="401"):
            fetch_snapshot("Org/Gated", "dataset", dest, endpoint=hub.url, gated=True)
        assert not dest.exists() and not list(dest.parent.glob(".*"))
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        fetch_snapshot("Org/Gated", "dataset", dest, endpoint=hub.url, gated=True)
    assert (dest / "train.jsonl").exists()


def test_prefetch_switches_the_hub_off_for_jobs_and_back_on_for_hub_fetch():
    from lorascope.hub.fetch import offline_for_jobs, online_again

    user = {"HF_DATASETS_OFFLINE": "0", "PATH": "/bin"}
    env = dict(user)
    offline_for_jobs(env)  # the snakemake that parses the Snakefile
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    job = dict(env)
    offline_for_jobs(job)  # a snakemake inside a SLURM job parses it again
    online_again(job)  # hub_fetch
    assert job == {**user, "LORASCOPE_HUB_ENV": env["LORASCOPE_HUB_ENV"]}
    plain = dict(user)
    online_again(plain)  # no prefetch: nothing to restore
    assert plain == user


def test_hub_fetch_refuses_an_offline_hub_naming_the_variable(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf

    monkeypatch.delenv("LORASCOPE_HUB_ENV", raising=False)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE is set in the environ"):
        fetch_snapshot("Org/Model", "model", tmp_path / "snap")
    assert not (tmp_path / "snap").exists()
