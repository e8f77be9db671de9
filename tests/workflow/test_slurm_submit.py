"""What the SLURM profile submits at paper scale, not only what it says.

The resources each job gets come from a real dry run of the paper config
through `profiles/slurm` (Snakemake resolves defaults and per-rule values);
the sbatch arguments come from snakemake-executor-plugin-slurm's own builder
(`get_submit_command` + `set_gres_string`, what its executor calls), so a
precedence rule of the plugin (cpus_per_task beats cpus_per_gpu) shows here
as it would on a cluster.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

GPU_RULES = {
    "train_rank1": 8,
    "eval_generate": 4,
    "extract_activations": 1,
    "mlp_features": 1,
    "kl_ablation": 1,
    "steering_sweep": 1,
    "train_sae": 1,
}
CPU_RULES = [
    "sft_dataset",
    "components",
    "adapters_ablate",
    "eval_grade",
    "lora_features",
]


class Resources(dict):
    """A job's resources, readable as `.get(k)` and `.k` like the plugin does."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


class Job:
    def __init__(self, name: str, resources: dict):
        self.name, self.resources, self.threads = name, Resources(resources), 1


def _value(text: str):
    return int(text) if re.fullmatch(r"-?\d+", text) else text


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    """rule -> resources of its first job in a dry run of the whole paper DAG."""
    cmd = [sys.executable, "-m", "snakemake", "all", "-n"]
    cmd += ["--profile", "profiles/slurm", "--configfile", "config/paper.yaml"]
    out = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=300
    ).stdout
    found: dict[str, dict] = {}
    for block in re.split(r"\nrule ", out)[1:]:
        name = block.split(":", 1)[0].strip()
        line = re.search(r"^\s*resources: (.*)$", block, re.M)
        if line and name not in found:
            pairs = (kv.split("=", 1) for kv in line.group(1).split(", "))
            found[name] = {k: _value(v) for k, v in pairs}
    assert found, f"no jobs parsed from the dry run:\n{out[-3000:]}"
    return found


def sbatch_args(name: str, res: dict) -> list[str]:
    job = Job(name, res)
    params = {
        "run_uuid": "RUN",
        "slurm_logfile": "LOG",
        "comment_str": f"rule_{name}",
        "account": "",
        "partition": f"-p {res['slurm_partition']}",
        "workdir": "WORKDIR",
    }
    return shlex.split(get_submit_command(job, params) + set_gres_string(job))


@pytest.mark.parametrize("rule,gpus", GPU_RULES.items())
def test_gpu_jobs_get_gpus_cpus_per_gpu_and_one_node(resources, rule, gpus):
    args = sbatch_args(rule, resources[rule])
    assert f"--gpus={gpus}" in args
    assert ["-p", "gpu"] == args[args.index("-p") : args.index("-p") + 2]
    assert "--cpus-per-gpu=8" in args, args  # not overridden by cpus_per_task
    assert not any(a.startswith("--cpus-per-task") for a in args), args
    if gpus > 1:
        assert "--nodes=1" in args, "multi-GPU jobs must stay on one node"


@pytest.mark.parametrize("rule", CPU_RULES)
def test_cpu_jobs_go_to_the_cpu_partition_without_gpus(resources, rule):
    args = sbatch_args(rule, resources[rule])
    assert args[args.index("-p") + 1] == "cpu"
    assert not any(a.startswith("--gpus") or a.startswith("--gres") for a in args)
    assert any(a.startswith("--cpus-per-task=") for a in args)


def test_training_submission_in_full(resources):
    """The closing note quotes these: the whole sbatch line for training."""
    args = sbatch_args("train_rank1", resources["train_rank1"])
    for expected in ("-t", "2880", "--mem", "--nodes=1", "--gpus=8"):
        assert expected in args
