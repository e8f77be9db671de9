"""Snapshots of hub repos on local disk, fetched once by a CPU job.

Used by rule `hub_fetch` (workflow/rules/hub.smk). Compute nodes often have
no internet and little home space; with `hub.prefetch` on, every model,
adapter and dataset the run needs is downloaded here, into `hub.dir`, and
GPU jobs load the local directory instead of a hub id. The snapshot is
written to a temporary sibling and renamed into place when complete, with a
`SNAPSHOT.json` recording where it came from: repo id, the revision asked
for, the commit it resolved to and the endpoint (without credentials), so a
model trained from it can name its base by hub id and commit
(`lorascope.train.trainer`) and `main`, a moving revision, is pinned.

With `hub.prefetch` on, workflow/rules/common.smk calls `offline_for_jobs`:
every job it starts gets HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1, so one
that reached for the hub instead of its snapshot fails at once rather than
downloading 61 GiB on a compute node (or hanging on one without internet);
`fetch_snapshot`, the only job that downloads, restores the user's values.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lorascope.core.io import atomic_path, write_json
from lorascope.hub.names import endpoint_url, public_url

__all__ = [
    "KINDS",
    "OFFLINE_VARS",
    "SNAPSHOT_FILE",
    "fetch_snapshot",
    "offline_for_jobs",
    "online_again",
    "read_snapshot",
]

SNAPSHOT_FILE = "SNAPSHOT.json"
KINDS = ("model", "dataset")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# The user's own values of OFFLINE_VARS (JSON), for the hub_fetch job.
SAVED_ENV = "LORASCOPE_HUB_ENV"


def offline_for_jobs(environ=os.environ) -> None:
    """Switch the hub off for every job this process starts (hub.prefetch).

    A snakemake started inside a job (SLURM) inherits the saved values of
    the one that submitted it and keeps them."""
    if SAVED_ENV not in environ:
        environ[SAVED_ENV] = json.dumps({k: environ.get(k) for k in OFFLINE_VARS})
    environ.update(dict.fromkeys(OFFLINE_VARS, "1"))


def online_again(environ=os.environ) -> None:
    """The user's values of OFFLINE_VARS back (hub_fetch, before the hub
    libraries are imported: they read them once)."""
    saved = environ.get(SAVED_ENV)
    if saved is None:
        return
    for key, value in json.loads(saved).items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value


def fetch_snapshot(
    repo_id: str,
    kind: str,
    dest: Path | str,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    gated: bool = False,
) -> dict:
    """Download `repo_id` (kind model|dataset) into `dest`; return the record.

    The token is read from `HF_TOKEN` here and only here; a gated repo without
    one fails naming the variable before any request.
    """
    online_again()
    import huggingface_hub.constants as hf
    from huggingface_hub import HfApi, snapshot_download

    if hf.HF_HUB_OFFLINE:
        raise RuntimeError(
            f"{repo_id}: HF_HUB_OFFLINE is set in the environment snakemake was "
            "started from, and hub_fetch must download: unset it for this run "
            "(with hub.prefetch every other job is offline anyway)"
        )

    if kind not in KINDS:
        raise ValueError(f"hub snapshot kind must be one of {KINDS}, got {kind!r}")
    token = os.environ.get("HF_TOKEN") or None
    if gated and token is None:
        raise RuntimeError(
            f"{repo_id} is gated: accept its terms on the hub and export HF_TOKEN "
            "for the hub_fetch job (no other job needs it)"
        )
    api = HfApi(endpoint=endpoint, token=token if token else False)
    # Resolve the revision to a commit first: the snapshot is one commit,
    # recorded beside it, even if the branch moves during the download.
    commit = api.repo_info(repo_id, repo_type=kind, revision=revision).sha
    with atomic_path(dest, is_dir=True) as tmp:
        local = snapshot_download(
            repo_id,
            repo_type=kind,
            revision=commit,
            local_dir=tmp,
            endpoint=endpoint,
            token=token if token else False,
        )
        shutil.rmtree(Path(local) / ".cache", ignore_errors=True)  # hub bookkeeping
        files = sorted(
            str(p.relative_to(tmp)) for p in Path(tmp).rglob("*") if p.is_file()
        )
        if not files:
            raise RuntimeError(f"{repo_id}@{revision or 'main'}: the snapshot is empty")
        record = {
            "repo_id": repo_id,
            "kind": kind,
            "revision": revision or "main",
            "commit": commit,
            "endpoint": public_url(endpoint_url(endpoint)),
            "files": files,
        }
        write_json(record, Path(tmp) / SNAPSHOT_FILE)
    return record


def read_snapshot(path: Path | str) -> dict | None:
    """The SNAPSHOT.json record of a fetched snapshot dir, else None (a local
    model of the user's, the toy model)."""
    record = Path(path) / SNAPSHOT_FILE
    if not record.is_file():
        return None
    return json.loads(record.read_text())
