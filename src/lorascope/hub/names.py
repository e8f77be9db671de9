"""Names of hub snapshots on disk (pure string logic: common.smk imports it
while parsing the workflow, so it stays free of heavy imports)."""

from __future__ import annotations

import re

__all__ = ["is_hub_id", "parse_snapshot_name", "snapshot_name"]

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
