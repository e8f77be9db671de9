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
    common = ["--profile", "profiles/slurm", "--configfile", "config/paper.yaml", "-n"]
    r = _snakemake(*common, "all", "--quiet", "rules")
    assert r.returncode == 0, r.stderr[-4000:]
    r = _snakemake(*common, "-p", "results/qwen32b/train/rank1/adapter")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    # Training asks the profile for 8 GPUs and launches FSDP over all of them.
    assert "rule train_rank1" in out and "gpu=8" in out
    assert "--num_processes 8" in out and "workflow/accelerate/fsdp.yaml" in out
    assert "--base Qwen/Qwen2.5-32B-Instruct" in out
    # No toy value leaks into the paper config (config.yaml is not loaded).
    assert '"max_steps": 200' not in out and "toy/base_model" not in out
