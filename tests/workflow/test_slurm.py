"""The SLURM profile against a real one-node SLURM cluster on 127.0.0.1.

tests/slurm/start_cluster.sh installs (when missing) and starts munged,
slurmctld and slurmd; stop_cluster.sh stops them by their recorded PIDs.
The tests skip, saying why, only where the packages cannot be installed
(or the machine gives no root). Select them with `pytest -m slurm`.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import wfrun

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "tests" / "slurm"
OVERLAY = SLURM_DIR / "profile"
PRODUCTION = REPO / "profiles" / "slurm"
# start_cluster.sh's exit code for "packages unavailable": the only skip.
NO_PACKAGES = 3

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(3000)]


def on_the_cluster(env) -> dict:
    """`env` without SLURM_CONF: the test cluster's config sits at SLURM's
    default path (start_cluster.sh), and conftest.py sets one naming no
    cluster for every other test."""
    return {k: v for k, v in env.items() if k != "SLURM_CONF"}


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """Start the cluster for this module; always stop what was started."""
    env = {
        **on_the_cluster(os.environ),
        "LORASCOPE_SLURM_STATE": str(tmp_path_factory.mktemp("st")),
        # Jobs inherit PATH: shell rules call the venv's `python`.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    start = subprocess.run(
        [SLURM_DIR / "start_cluster.sh"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        if start.returncode == NO_PACKAGES:
            pytest.skip(f"no SLURM packages on this machine:\n{start.stderr}")
        assert start.returncode == 0, f"cluster failed to start:\n{start.stderr}"
        pid_dir = Path(env["LORASCOPE_SLURM_STATE"]) / "pids"
        pids = {p.stem: int(p.read_text()) for p in pid_dir.glob("*.pid")}
        assert pids.keys() == {"munged", "slurmctld", "slurmd"}
        yield env
    finally:
        subprocess.run([SLURM_DIR / "stop_cluster.sh"], env=env, check=True, timeout=60)
    # The daemons this fixture started are gone (by PID, not by name).
    alive = {n: p for n, p in pids.items() if Path(f"/proc/{p}").exists()}
    assert not alive, f"daemons still running after stop_cluster.sh: {alive}"
    # Its config too: left behind, every later snakemake waited for scontrol.
    conf = Path("/etc/slurm/slurm.conf")
    assert not conf.exists() or "lorascope" not in conf.read_text(), conf


def snakemake(args, cwd, env, timeout=600):
    """Run the venv's snakemake CLI; fail with its output on a nonzero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"snakemake {args} failed:\n{proc.stderr[-6000:]}"
    return proc


TOY_SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: "b.txt"

    rule a:
        output: "a.txt"
        log: "logs/a.log"
        shell: "echo job=$SLURM_JOB_ID > {output} 2> {log}"

    rule b:
        input: "a.txt"
        output: "b.txt"
        log: "logs/b.log"
        shell: "cat {input} > {output}; echo job=$SLURM_JOB_ID >> {output}"
    """
)


def test_toy_workflow_runs_as_slurm_jobs(slurm_cluster, tmp_path):
    """Two dependent rules run as two SLURM jobs through the overlay profile."""
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    snakemake(["--profile", str(OVERLAY)], tmp_path, slurm_cluster)
    lines = (tmp_path / "b.txt").read_text().split()
    job_ids = [line.removeprefix("job=") for line in lines]
    # Each rule saw its own SLURM allocation (a local run has no job id).
    assert len(job_ids) == 2 and all(j.isdigit() for j in job_ids), lines
    assert job_ids[0] != job_ids[1]


def tree_digest(root):
    """Relative path -> bytes for every file under root (logs excluded)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# The training and extraction chain: the jobs that become GPU jobs at paper
# scale. Their inputs (the toy world and the SFT data, CPU jobs) are copies of
# the local reference run's, so every job this test sends through SLURM is
# one of them. (The whole micro DAG through SLURM takes several minutes of
# job submission and status polling on one node; the local reference run is
# the whole-DAG test.)
SLURM_TARGETS = ["components.parquet", "activations/manifest.json"]
SLURM_JOBS = {"train_rank1", "components", "extract_activations"}
UPSTREAM = ["toy", "data"]


def test_micro_config_on_slurm_matches_local(slurm_cluster, tmp_path_factory):
    """The micro config through profiles/slurm gives the local run's outputs."""
    assert (PRODUCTION / "config.yaml").exists(), "profiles/slurm/config.yaml missing"
    local = wfrun.reference_run(tmp_path_factory.getbasetemp())
    work = wfrun.clone(local, tmp_path_factory.mktemp("slurm-micro"), UPSTREAM)
    profiles = ["--profile", str(PRODUCTION), "--profile", str(OVERLAY)]
    targets = [wfrun.target(t) for t in SLURM_TARGETS]
    proc = subprocess.run(
        wfrun.command(work, targets, extra=profiles),
        cwd=work,
        env=on_the_cluster({**slurm_cluster, **wfrun.env()}),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, f"SLURM micro run failed:\n{proc.stderr[-6000:]}"
    assert "slurm" in proc.stderr.lower(), "the jobs did not go through SLURM"
    assert set(wfrun.job_stats(proc.stderr) or {}) == SLURM_JOBS, proc.stderr[-3000:]
    slurm, ref = tree_digest(wfrun.results(work)), tree_digest(wfrun.results(local))
    assert slurm, "the micro run produced no results"
    for t in SLURM_TARGETS:
        assert any(p.startswith(t) for p in slurm), f"{t} not built on SLURM"
    missing = sorted(set(slurm) - set(ref))
    assert not missing, f"files the local run does not have: {missing}"
    # Same seed, same CPU code: artifacts match byte for byte, except files
    # that record when or where they ran.
    volatile = ("versions.json", "usage.json", "train_log.jsonl", ".log", ".html")
    differ = [
        path
        for path, data in slurm.items()
        if data != ref[path] and not path.endswith(volatile)
    ]
    assert not differ, f"SLURM and local runs differ in: {differ}"
