# Helpers shared by every stage; no rules here. Validates the config before
# any job is scheduled and defines where outputs and logs go.
import json
import os
import sys

from snakemake.exceptions import WorkflowError

# The package lives in src/; make it importable here and in every job
# (jobs inherit the environment, on SLURM too).
_SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, _SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.getenv("PYTHONPATH")) if p)
)

from lorascope.config import ConfigError, section, validate
from lorascope.models import base_model_path as base_model_location

try:
    validate(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

RUN = config["run"]
VARIANTS = ["base", "rank1", "full", "rank1-attn-ablated", "rank1-mlp-ablated"]
KINDS = ["lora", "mlp", "sae"]


wildcard_constraints:
    variant="|".join(VARIANTS),
    kind="|".join(KINDS),
    benchmark=r"[A-Za-z0-9_.-]+",


def res(path):
    """Path of an artifact of this run."""
    return f"results/{RUN}/{path}"


def log_(path):
    """Path of a rule's log file for this run."""
    return f"logs/{RUN}/{path}"


def cfg(name):
    """One config section as a plain dict (a rule's params: a change reruns it)."""
    return section(config, name)


def output_parent(wildcards, output):
    """The directory holding a rule's first output (params, never hard-coded)."""
    return os.path.dirname(output[0])


def base_model_path(wildcards=None):
    """Where the base model loads from: the toy dir or a hub id / path."""
    return base_model_location(config["model"], f"results/{RUN}")


def base_model_input(wildcards=None):
    """The toy base model dir when model.base is 'toy'; nothing for a hub id."""
    if config["model"]["base"] == "toy":
        return res("toy/base_model")
    return []


def toy_sft_input(wildcards):
    return [res("toy/s1k.parquet")] if config["data"]["dataset"] == "toy" else []


def train_config(wildcards):
    """The config sections training depends on, as JSON for the command line."""
    return json.dumps({k: config[k] for k in ("seed", "device", "model", "train")})


def python_bin():
    """The interpreter shell rules run: the conda env's under --sdm conda,
    else the one running Snakemake (a venv need not be activated)."""
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python"
    return sys.executable


def launcher(wildcards, resources):
    """One process on CPU / one GPU; accelerate + FSDP when the profile gives more."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus <= 1:
        return python_bin()
    fsdp = config["train"]["fsdp_config"] or "workflow/accelerate/fsdp.yaml"
    accelerate = os.path.join(os.path.dirname(python_bin()), "accelerate")
    if python_bin() == "python":
        accelerate = "accelerate"
    return f"{accelerate} launch --config_file {fsdp} --num_processes {gpus}"


def train_targets():
    return [res("components.parquet"), res("train/full/model")]



def get_final_output():
    """Everything `snakemake all` builds: each stage lists its final targets."""
    return [
        *train_targets(),
        *eval_targets(),
        *activations_targets(),
        *sae_targets(),
        *autointerp_targets(),
        *ablation_targets(),
        *figures_targets(),
    ]
