"""The workflow as a whole: lint-clean, and the paper-scale DAG builds."""

import re
import shlex

from conftest import REPO
from dryrun import snakemake as _snakemake


def readme_command(prefix: str) -> list[str]:
    """The README's command line starting with `prefix`, as the user types it."""
    lines = [
        line.strip()
        for line in (REPO / "README.md").read_text().splitlines()
        if line.strip().startswith(prefix)
    ]
    assert len(lines) == 1, f"README should show one `{prefix} ...` line: {lines}"
    return shlex.split(lines[0])


# Snakemake's linter asks for every function in one common module; ours keep
# each stage's input functions at the top of that stage's rule file, so
# common.smk stays a leaf (docs/ARCHITECTURE.md, tests/unit/test_layout.py).
ACCEPTED_LINTS = {"Mixed rules and functions in same snakefile."}


def test_lint_clean():
    r = _snakemake("--lint")
    text = r.stdout + r.stderr
    lints = re.findall(r"^ +\* (.+?):?\n", text, re.M)
    assert lints or r.returncode == 0, text[-4000:]
    unexpected = sorted(set(lints) - ACCEPTED_LINTS)
    assert not unexpected, text[-4000:]


def test_readme_paper_command_dry_runs():
    """The exact line the README shows for paper scale, dry run (-n)."""
    cmd = readme_command("snakemake --profile profiles/slurm")
    assert cmd[0] == "snakemake"
    r = _snakemake(*cmd[1:], "-n", "--quiet", "rules")
    assert r.returncode == 0, r.stderr[-4000:]
    assert re.search(r"train_rank1\s+1", r.stdout), r.stdout[-2000:]


def test_paper_scale_dry_run_asks_for_gpus():
    target = "results/qwen32b/train/rank1/adapter"
    common = ["--profile", "profiles/slurm", "-n", "-p", target]
    r = _snakemake(*common, "--configfile", "config/paper.yaml")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    # Training asks the profile for 8 GPUs and launches FSDP over all of them.
    assert "rule train_rank1" in out and "gpu=8" in out
    assert "--num_processes 8" in out and "workflow/accelerate/fsdp.yaml" in out
    # hub.prefetch: the GPU job reads the snapshot a CPU job (hub_fetch) made.
    assert "--base hub/model/Qwen--Qwen2.5-32B-Instruct@main" in out
    assert "rule hub_fetch" in out
    # No toy value leaks into the paper config (config.yaml is not loaded).
    assert '"max_steps": 200' not in out and "toy/base_model" not in out


def test_one_gpu_config_dry_runs_on_a_workstation():
    """config/one_gpu.yaml stacked on config/paper.yaml with
    profiles/workstation: the whole DAG builds, training is one process (no
    accelerate/FSDP), every model job takes the one card, and the full
    fine-tune is the published 1.5B checkpoint."""
    target = "results/qwen1.5b/train/rank1/adapter"
    common = ["--profile", "profiles/workstation", "-n"]
    configs = ["--configfile", "config/paper.yaml", "config/one_gpu.yaml"]
    r = _snakemake("all", *common, "--quiet", "rules", *configs)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "full_checkpoint" in r.stdout and "train_full " not in r.stdout
    r = _snakemake(target, *common, "-p", *configs)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "gpu=1" in out and "accelerate launch" not in out
    snapshot = "hub/model/Qwen--Qwen2.5-1.5B-Instruct@main"
    assert f"-m lorascope.train --variant rank1 --base {snapshot}" in out
