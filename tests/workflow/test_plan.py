"""The resource model through Snakemake (issue 31): dry runs of the paper,
one-GPU and published-adapter configs with profiles/slurm give every job
the GPUs, memory and time the model computes; every rule that loads the
model's weights a GPU in the GPU partition, within a node and the time
limit; config/one_gpu.yaml trains in one process; every rule of the
workflow is in the model; a bad `hardware` fails naming it; and
docs/cluster-plan.md is the `plan` command's current output."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO
from dryrun import dry_run, snakemake

from lorascope.workflow.plan import load_configs
from lorascope.workflow.resources import (
    CPU_RULES,
    GPU_RULES,
    Hardware,
    rule_needs,
    rule_resources,
)

CONFIGS = {
    "paper": ["config/paper.yaml"],
    "one_gpu": ["config/paper.yaml", "config/one_gpu.yaml"],
    "published": ["config/paper.yaml", "config/presets/published_adapter.yaml"],
}
SLURM = Hardware.from_profile(REPO / "profiles" / "slurm")


@pytest.fixture(scope="module", params=list(CONFIGS))
def run(request):
    """(name, validated config, rule -> resources of its first dry-run job)."""
    files = CONFIGS[request.param]
    jobs = dry_run("all", "--profile", "profiles/slurm", "--configfile", *files)
    return request.param, load_configs([REPO / f for f in files]), jobs


def test_every_job_gets_the_modelled_resources(run):
    name, config, jobs = run
    for rule, got in jobs.items():
        if rule == "all":
            continue
        want = rule_resources(rule, config, SLURM, REPO)
        assert {k: got.get(k) for k in want} == want, (name, rule)
        if "gpu" not in want:
            assert "gpu" not in got, (name, rule)
            assert got["slurm_partition"] == SLURM.cpu_partition, (name, rule)


def test_weight_loading_jobs_get_a_gpu_within_a_node_and_the_limit(run):
    name, config, jobs = run
    loading = [r for r in jobs if r in GPU_RULES]
    assert {"extract_activations", "feature_ablation", "feature_accuracy"} <= set(
        loading
    )
    for rule in loading:
        res, needs = jobs[rule], rule_needs(rule, config, SLURM, REPO)
        assert 1 <= res["gpu"] <= SLURM.gpus_per_node, (name, rule)
        assert res["slurm_partition"] == SLURM.gpu_partition, (name, rule)
        assert res["runtime"] <= SLURM.max_runtime_min, (name, rule)
        assert needs.gpu_bytes <= SLURM.card_bytes * 0.9, (name, rule)
        if res["gpu"] > 1:
            assert res["nodes"] == 1, (name, rule)


def _train_command(*configs: str) -> str:
    target = "results/{}/train/rank1/adapter"
    run_name = "qwen1.5b" if "config/one_gpu.yaml" in configs else "qwen32b"
    proc = snakemake(
        target.format(run_name), "-n", "-p", "--profile", "profiles/slurm",
        "--configfile", *configs,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    (line,) = [ln for ln in out.splitlines() if "-m lorascope.train" in ln]
    return line


def test_fsdp_processes_are_the_gpus_the_model_gives():
    """Issue 31, item 3: the launcher runs one process per GPU the job gets,
    so config/one_gpu.yaml on the cluster profile trains in one process
    (global batch 16), the paper config in eight."""
    one = _train_command("config/paper.yaml", "config/one_gpu.yaml")
    assert "accelerate launch" not in one and "--num_processes" not in one
    paper = _train_command("config/paper.yaml")
    assert "accelerate launch" in paper and "--num_processes 8" in paper


def test_every_rule_of_the_workflow_is_in_the_resource_model():
    listed = set()
    # config/sweep.yaml: the sweep's figure rules exist only in a sweep.
    for files in [
        [],
        *CONFIGS.values(),
        ["tests/configs/micro.yaml"],
        ["config/sweep.yaml"],
    ]:
        args = ["--configfile", "config/config.yaml", *files] if files else []
        proc = snakemake("--list-rules", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        listed |= set(proc.stdout.split()) - {"all", "sweep"}  # targets only
    modelled = set(GPU_RULES) | set(CPU_RULES)
    assert listed - modelled == set(), "rules the resource model does not know"
    assert modelled - listed <= {"train_full"}, "names of no rule in the model"


def test_without_hardware_jobs_get_the_profiles_defaults():
    """hardware: null (profiles/local, no profile): no job asks for a GPU."""
    jobs = dry_run("all", "--configfile", "config/paper.yaml")
    assert all("gpu" not in res for res in jobs.values())


def test_a_missing_hardware_file_fails_naming_it():
    proc = snakemake(
        "all", "-n", "--profile", "profiles/slurm", "--configfile",
        "config/paper.yaml", "--config", "hardware=profiles/nowhere.yaml",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "hardware: no file at 'profiles/nowhere.yaml'" in proc.stdout + proc.stderr


def test_cluster_plan_doc_is_the_plan_commands_output():
    """docs/cluster-plan.md holds `plan`'s output for config/paper.yaml
    (make cluster-plan writes it): a change to the model or the profile
    that is not regenerated there fails here."""
    proc = subprocess.run(
        [sys.executable, "-m", "lorascope.workflow.plan", "--strict",
         "--configfile", "config/paper.yaml", "--profile", "profiles/slurm"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "jobs: snakemake -n --forceall" in proc.stdout  # counts from the DAG
    assert re.search(r"^total GPU-hours: \d+$", proc.stdout, re.M)
    doc = (REPO / "docs" / "cluster-plan.md").read_text()
    assert proc.stdout.strip() in doc, "docs/cluster-plan.md: run make cluster-plan"
