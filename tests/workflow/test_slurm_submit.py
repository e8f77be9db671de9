"""What the SLURM profile submits at paper scale, not only what it says.

The resources each job gets come from a real dry run of the paper config
through `profiles/slurm` (the resource model computes them against
profiles/slurm/hardware.yaml; Snakemake resolves them with the profile's
defaults); the sbatch arguments come from snakemake-executor-plugin-slurm's
own builder (`get_submit_command` + `set_gres_string`, what its executor
calls), so a precedence rule of the plugin (cpus_per_task beats
cpus_per_gpu) shows here as it would on a cluster.
"""

from __future__ import annotations

import shlex

import pytest
from conftest import REPO
from dryrun import dry_run
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

from lorascope.workflow.plan import load_configs
from lorascope.workflow.resources import Hardware, rule_resources

# GPUs per job at paper scale (the resource model's answer for
# config/paper.yaml on 8 x 80 GB nodes; test_plan.py checks every rule
# against the model, this pins the paper's shape of the run).
GPU_RULES = {
    "train_rank1": 8,
    "eval_generate": 4,
    "extract_activations": 1,
    "mlp_features": 1,
    "kl_ablation": 1,
    "steering_sweep": 1,
    "feature_ablation": 1,
    "feature_accuracy": 1,
    "train_sae": 1,
    "sae_features": 1,
}
CPU_RULES = [
    "hub_fetch",
    "sft_dataset",
    "components",
    "adapters_ablate",
    "eval_grade",
    "lora_features",
    "direct_effects",
    "autointerp_explain",
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


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    """rule -> resources of its first job in a dry run of the whole paper DAG."""
    return dry_run(
        "all", "--profile", "profiles/slurm", "--configfile", "config/paper.yaml"
    )


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
    """The closing note quotes these: the whole sbatch line for training,
    with the time and memory the resource model computes."""
    config = load_configs([REPO / "config" / "paper.yaml"])
    hw = Hardware.from_profile(REPO / "profiles" / "slurm")
    model = rule_resources("train_rank1", config, hw, REPO)
    args = sbatch_args("train_rank1", resources["train_rank1"])
    assert args[args.index("-t") + 1] == str(model["runtime"])
    assert args[args.index("--mem") + 1] == str(model["mem_mb"])
    for expected in ("--nodes=1", "--gpus=8", "--cpus-per-gpu=8"):
        assert expected in args
