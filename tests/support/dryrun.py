"""Snakemake dry runs of the repository's own workflow, and what they print
per job: its resources (as the executor plugin receives them) and its
shell command. Used by tests/workflow/test_slurm_submit.py and test_plan.py."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def snakemake(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m snakemake ARGS` in the repository (stdout and stderr kept)."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _value(text: str):
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def job_resources(out: str) -> dict[str, dict]:
    """rule -> resources of its first job in a dry run's output."""
    found: dict[str, dict] = {}
    for block in re.split(r"\nrule ", out)[1:]:
        name = block.split(":", 1)[0].strip()
        line = re.search(r"^\s*resources: (.*)$", block, re.M)
        if line and name not in found:
            pairs = (kv.split("=", 1) for kv in line.group(1).split(", "))
            found[name] = {k: _value(v) for k, v in pairs}
    return found


def dry_run(*args: str) -> dict[str, dict]:
    """rule -> resources of its first job in `snakemake -n ARGS`; fails the
    test with the output's tail when the dry run fails or lists no job."""
    proc = snakemake("-n", *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    found = job_resources(proc.stdout)
    assert found, f"no jobs parsed from the dry run:\n{out[-3000:]}"
    return found
