"""The workflow as a whole: lint-clean, and the paper-scale DAG builds."""

import subprocess
import sys

from conftest import REPO


def _snakemake(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_lint_clean():
    r = _snakemake("--lint")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


def test_paper_scale_dry_run_asks_for_gpus():
    r = _snakemake(
        "--profile",
        "profiles/slurm",
        "--configfile",
        "config/paper.yaml",
        "-n",
        "all",
        "--quiet",
        "rules",
    )
    assert r.returncode == 0, r.stderr[-4000:]
    r = _snakemake(
        "--profile",
        "profiles/slurm",
        "--configfile",
        "config/paper.yaml",
        "-n",
        "results/qwen32b/train/rank1/adapter",
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "rule train_rank1" in out and "gpu=8" in out
    assert "Qwen/Qwen2.5-32B-Instruct" not in out or "accelerate launch" not in out
