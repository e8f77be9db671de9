# Helpers shared by every stage; no rules here. Validates the config before
# any job is scheduled, defines where outputs and logs go, and states what each
# rule depends on so that a rerun rebuilds exactly what a change invalidated.
#
# Wiring conventions (docs/ARCHITECTURE.md, "Wiring conventions"): params
# carry only the config a rule reads (cfg/config_of/setting; RUNTIME_KEYS are
# never recorded), `code=code_of(...)` hashes the code a rule runs, files from
# outside results/ are inputs whose content `user_files_of` records, and
# nothing recorded holds an absolute path.
import os
import sys

from snakemake.exceptions import WorkflowError

# This file's repository (not the main Snakefile's folder: a Snakefile
# elsewhere may include these rules) holds scripts and src/. Jobs import the
# package from there, watch this snakemake and stop with it (jobenv).
REPO = os.path.abspath(os.path.join(str(workflow.current_basedir), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "src"))
from lorascope.workflow.jobenv import prepare_jobs

prepare_jobs(os.path.join(REPO, "src"))
from lorascope.core.config import load_schema, validate
from lorascope.core.models import base_model_path as base_model_location
from lorascope.workflow import fingerprints
from lorascope.workflow.codeversion import code_version, use_disk_cache
from lorascope.workflow.wiring import RUNTIME_KEYS, JobConfig, declared, recorded
from lorascope.core.names import is_toy, is_toy_benchmark
from lorascope.hub.fetch import offline_for_jobs
from lorascope.hub.names import hub_root, is_hub_id, snapshot_name
from lorascope.workflow.resources import load_hardware, rule_priority, rule_resources
from lorascope.workflow.sweep import member_pattern, sweep_members


def hub_benchmarks():
    """The benchmark registry's names (imported only when a hub name is used)."""
    from lorascope.evaluation.benchmarks import BENCHMARKS as REGISTRY

    return list(REGISTRY)


SCHEMA = load_schema()
use_disk_cache(".snakemake/lorascope/code_hashes.json")
fingerprints.use_disk_cache(".snakemake/lorascope/user_files.json")
try:
    validate(config, SCHEMA, benchmarks=hub_benchmarks)
    HARDWARE = load_hardware(config["hardware"], REPO)  # see resources_for
except ValueError as err:  # ConfigError, a missing or unknown hardware.yaml
    raise WorkflowError(str(err)) from None
if config["hub"]["prefetch"]:  # jobs read snapshots; hub_fetch goes online again
    offline_for_jobs()


RUN = config["run"]


def resources_for(rule):
    """Rule `rule`'s resources (`resources: **resources_for(...)`): one model
    (lorascope.workflow.resources) against the hardware.yaml the key `hardware`
    names (profiles/slurm, /workstation); null: the profile's defaults."""
    try:
        return rule_resources(rule, config, HARDWARE)
    except ValueError as err:
        raise WorkflowError(f"resources of {rule!r}: {err}") from None


# The model variants every benchmark is evaluated with (Tables 1 and 2); the
# derived adapters (rule adapters_ablate) and the component group each removes.
VARIANTS = ["base", "rank1", "full", "rank1-attn-ablated", "rank1-mlp-ablated"]
ABLATED_GROUP = {"rank1-attn-ablated": "attn", "rank1-mlp-ablated": "mlp"}
LORA_VARIANTS = ["rank1", *ABLATED_GROUP]
# The benchmarks this run evaluates (eval.benchmarks), not the registry of
# hub benchmarks (lorascope.evaluation.benchmarks.BENCHMARKS).
EVAL_BENCHMARKS = config["eval"]["benchmarks"]
# Feature populations: LoRA directions, MLP neurons, SAE latents.
KINDS = ["lora", "mlp", "sae"]
# The adapters the LoRA-dependent stages analyse (lorascope.workflow.sweep):
# the default member at today's paths ({member} = ""), sweep members under
# sweep/<tag>/. Their rules' paths start with {member} (mres, mlog).
MEMBERS = sweep_members(config)
MEMBER = {m.prefix: m for m in MEMBERS}


wildcard_constraints:
    member=member_pattern(MEMBERS),
    variant="|".join(VARIANTS),
    kind="|".join(KINDS),
    benchmark=r"[A-Za-z0-9_.-]+",


def res(path):
    """Path of an artifact of this run."""
    return f"results/{RUN}/{path}"


def log_(path):
    """Path of a rule's log file for this run."""
    return f"logs/{RUN}/{path}"


def mres(path, wildcards=None):
    """Path of a sweep member's artifact: a pattern, or the member's own."""
    member = wildcards.member if wildcards else "{member}"
    return res(f"{member}{path}")


def mlog(path):
    return log_(f"{{member}}{path}")


# --- wiring: what a rule depends on -------------------------------------------


def config_of(*paths):
    """The config keys a rule reads, by dotted path ("sae" = the whole
    section), as one JobConfig rooted at the top level (a rule's params)."""
    return declared(config, paths, SCHEMA)


def cfg(path, *keys, exclude=()):
    """One config section (or subsection, "train.lora") as a rule's params:
    all of it, only `keys`, or all but `exclude`."""
    node = config
    for part in path.split("."):
        node = node[part]
    names = keys or [k for k in node if k not in exclude]
    picked = config_of(*(f"{path}.{k}" for k in names))
    for part in path.split("."):
        picked = picked[part]
    return picked


def setting(path):
    """One config value as a param (a change reruns; a URL without userinfo)."""
    if path in RUNTIME_KEYS:
        raise WorkflowError(f"{path} is runtime-only: declare it with cfg(...)")
    node = config
    for part in path.split("."):
        node = node[part]
    return recorded(node)


def code_of(entry, data=()):
    """Content hashes of the code a rule runs from its script ("sae_train.py")
    or `-m` module ("lorascope.train"), and of `data` (repo-relative paths)."""
    if entry.endswith(".py"):
        entry = f"workflow/scripts/{entry}"
    return code_version(REPO, entry, data)


def user_files_of(*inputs):
    """Param: content fingerprints of the user-supplied paths among `inputs`
    (input functions or paths; what rules make, under results/{run}/ or the
    hub dir, is left out), keyed by the paths as written."""

    def user_files(wildcards):
        values = [f(wildcards) if callable(f) else f for f in inputs]
        return fingerprints.of_user_paths(values, made=(res(""), f"{HUB_DIR}/"))

    return user_files


def output_parent(wildcards, output):
    """The directory holding a rule's first output (params, never hard-coded)."""
    return os.path.dirname(output[0])


# --- the base model --------------------------------------------------------------


def base_model_path(wildcards=None):
    """Where the base model loads from: the toy dir, a local dir, a hub id, or
    with hub.prefetch the hub id's local snapshot."""
    model = config["model"]
    return prefetched("model", model["base"], model["revision"]) or (
        base_model_location(model, f"results/{RUN}")
    )


def base_model_input(wildcards=None):
    """The toy base model dir, a local model dir (as written) or a prefetched
    snapshot; nothing for a hub id read from the hub (its revision is a param)."""
    model = config["model"]
    if is_toy(model["base"]):
        return res("toy/base_model")
    snapshot = prefetched("model", model["base"], model["revision"])
    return snapshot or (model["base"] if os.path.isdir(model["base"]) else [])


# --- hub snapshots (used by workflow/rules/hub.smk and the loading rules) ------


HUB_DIR = config["hub"]["dir"]
# Snapshots of this run's endpoint (huggingface.co: HUB_DIR itself).
HUB_ROOT = hub_root(HUB_DIR, config["hub"]["endpoint"])


def hub_repo(name):
    """Whether a model/dataset name is read from the hub (not toy, not local)."""
    local = is_toy(name) or name == "train" or os.path.exists(name)
    return not local and is_hub_id(name)


def prefetched(kind, name, revision, always=False):
    """The local snapshot `name` is read from when hub.prefetch is on (or
    `always`; made by the hub_fetch rule), else None (read the name as is)."""
    if not ((always or config["hub"]["prefetch"]) and name and hub_repo(name)):
        return None
    return f"{HUB_ROOT}/{kind}/{snapshot_name(name, revision)}"


def model_keys():
    """The model keys that change a loaded model's outputs."""
    return [f"model.{k}" for k in ("revision", "dtype", "attn_implementation")]


def job_gpus(wildcards, resources):
    """GPUs the job gets (0 on CPU; shell rules' --gpus); not recorded."""
    return int(getattr(resources, "gpu", 0) or 0)


def python_bin():
    """The interpreter shell rules run: the conda env's under --sdm conda,
    else the one running Snakemake (a venv need not be activated)."""
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python"
    return sys.executable


# --- what `snakemake all` builds -----------------------------------------------

_FINAL_TARGETS = []


def final_targets(*paths):
    """A stage file adds its final targets (in include order)."""
    _FINAL_TARGETS.extend(paths)


def member_targets(*paths):
    """`paths` under every sweep member's root (a stage's final targets, the
    sweep rules' inputs)."""
    return [res(f"{m.prefix}{p}") for m in MEMBERS for p in paths]


def get_final_output():
    """Everything `snakemake all` builds: what each stage added."""
    return list(_FINAL_TARGETS)
