"""Names of hub snapshots on disk (pure string logic: common.smk imports it
while parsing the workflow, so it stays free of heavy imports).

Snapshots are keyed by endpoint, repo and revision: those of huggingface.co
sit in `{hub.dir}/{kind}/`, those of any other endpoint (a mirror, a local
stand-in) in `{hub.dir}/endpoints/{host}-{digest}/{kind}/`, so a run against
another endpoint never reuses copies fetched from the first one.
"""

from __future__ import annotations

import hashlib
import os
import re
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DEFAULT_ENDPOINT",
    "endpoint_url",
    "hub_root",
    "is_hub_id",
    "parse_snapshot_name",
    "public_url",
    "snapshot_name",
]

DEFAULT_ENDPOINT = "https://huggingface.co"

_NAME = re.compile(r"^(?P<org>[^/@]+?)--(?P<name>[^/@]+)@(?P<revision>[^/@]+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a hub id `org/name` (the caller rules out local
    paths first: `models/qwen` may be either)."""
    return bool(name) and bool(_HUB_ID.match(name)) and "--" not in name


def snapshot_name(repo_id: str, revision: str | None) -> str:
    """`Org/Name` at `revision` -> `Org--Name@revision` (one path component)."""
    if not is_hub_id(repo_id):
        raise ValueError(f"hub id {repo_id!r}: expected 'org/name'")
    return repo_id.replace("/", "--") + "@" + (revision or "main")


def parse_snapshot_name(name: str) -> tuple[str, str]:
    """Inverse of `snapshot_name`: (repo_id, revision)."""
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a snapshot name (org--name@revision)")
    return f"{m['org']}/{m['name']}", m["revision"]


def endpoint_url(configured: str | None) -> str:
    """The endpoint a fetch talks to: hub.endpoint, else HF_ENDPOINT (what
    huggingface_hub reads), else huggingface.co; without a trailing slash."""
    return (configured or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def public_url(url: str) -> str:
    """`url` without user:password (what is written to disk or a path)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def hub_root(hub_dir: str, configured: str | None) -> str:
    """Where the snapshots of the configured endpoint go under `hub_dir`."""
    url = public_url(endpoint_url(configured))
    if url == DEFAULT_ENDPOINT:
        return hub_dir
    host = re.sub(r"[^A-Za-z0-9.-]+", "_", urlsplit(url).netloc) or "endpoint"
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    return f"{hub_dir}/endpoints/{host}-{digest}"
