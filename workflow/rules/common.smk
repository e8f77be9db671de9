# Helpers shared by every stage; no rules here. Validates the config before
# any job is scheduled, defines where outputs and logs go, and states what each
# rule depends on so that a rerun rebuilds exactly what a change invalidated.
#
# Wiring conventions (docs/ARCHITECTURE.md explains them with examples):
# - params carry only the config a rule reads, e.g. `cfg("sae")` (a section),
#   `cfg("eval", "ci", "limit")` (some keys), `config_of("seed", "model.dtype")`
#   (keys of several sections), `setting("eval.ci")` (one value). A job that
#   reads a key its rule did not declare fails naming it (UndeclaredKey).
# - keys in RUNTIME_KEYS (lorascope/workflow/wiring.py: batch sizes for memory,
#   concurrency, retries, checkpoint cadence) are handed to the job but never
#   recorded: changing one reruns nothing.
# - every rule has `code=code_of(<its script or entry module>)`, content hashes
#   of the files its logic lives in (imports found by parsing, not importing).
#   Editing sae/training.py reruns the SAE and what depends on it; a touch, a
#   comment, a docstring or a moved checkout reruns nothing.
# - files a rule reads from outside results/ are inputs, as the user wrote
#   their paths (data.data_files, eval.benchmark_files, autointerp.prompts).
# - nothing recorded holds an absolute path, so a moved checkout reruns nothing.
# - profiles/default (loaded by default) sets the rerun triggers: mtime, params,
#   input, software-env; not `code`, whose only effect on script rules is to
#   rerun on a script's mtime (code_of tracks content instead).
import os
import sys

from snakemake.exceptions import WorkflowError

# The repository holding this file: scripts, src/ and the code hashes are
# found from here, not from the main Snakefile's folder (a Snakefile elsewhere
# may include these rules).


REPO = os.path.abspath(os.path.join(str(workflow.current_basedir), "..", ".."))
# The package lives in src/; make it importable here and in every job
# (jobs inherit the environment, on SLURM too).


_SRC = os.path.join(REPO, "src")
sys.path.insert(0, _SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.getenv("PYTHONPATH")) if p)
)
# Jobs watch this snakemake and stop if it dies, even by SIGKILL
# (lorascope.core.runtime.stop_when_snakemake_dies): a paid API job must not
# outlive the run that started it.
os.environ.update(LORASCOPE_SNAKEMAKE_PID=str(os.getpid()))

from lorascope.workflow.environment import check_environment
from lorascope.core.config import ConfigError, load_schema, validate
from lorascope.core.models import base_model_path as base_model_location
from lorascope.workflow.codeversion import code_version, use_disk_cache
from lorascope.workflow.wiring import RUNTIME_KEYS, JobConfig, declared
from lorascope.core.names import is_toy, is_toy_benchmark
from lorascope.hub.names import is_hub_id, snapshot_name
from lorascope.hub.fetch import offline_for_jobs


def hub_benchmarks():
    """The benchmark registry's names (imported only when a hub name is used)."""
    from lorascope.evaluation.benchmarks import BENCHMARKS as REGISTRY

    return list(REGISTRY)


SCHEMA = load_schema()
use_disk_cache(".snakemake/lorascope/code_hashes.json")
try:
    validate(config, SCHEMA, benchmarks=hub_benchmarks)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
if config["hub"]["prefetch"]:  # jobs read snapshots; hub_fetch goes online again
    offline_for_jobs()


RUN = config["run"]
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
    """One config value as a param (a change reruns the rule)."""
    if path in RUNTIME_KEYS:
        raise WorkflowError(f"{path} is runtime-only: declare it with cfg(...)")
    node = config
    for part in path.split("."):
        node = node[part]
    return node


def code_of(entry, data=()):
    """Content hashes of what a rule runs, i.e. a script in workflow/scripts/
    ("sae_train.py") or a module run with python -m ("lorascope.train"), the
    lorascope modules it imports, their data folders, and `data` (files or
    folders relative to the repo)."""
    if entry.endswith(".py"):
        entry = f"workflow/scripts/{entry}"
    return code_version(REPO, entry, data)


def check_llm_environment():
    """API keys of the LLM steps about to run (the Snakefile's onstart hook:
    not in a dry run, still before any job starts)."""
    try:
        steps = {job.rule.name for job in workflow.dag.needrun_jobs()}
    except AttributeError:  # Snakemake moved its DAG: check every step
        steps = None
    problems = check_environment(config, steps)
    if problems:
        raise WorkflowError("invalid environment:\n  " + "\n  ".join(problems))


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


def hub_repo(name):
    """Whether a model/dataset name is read from the hub (not toy, not local)."""
    return (
        not is_toy(name)
        and name != "train"
        and not os.path.exists(name)
        and is_hub_id(name)
    )


def prefetched(kind, name, revision, always=False):
    """The local snapshot `name` is read from when hub.prefetch is on (or
    `always`; made by the hub_fetch rule), else None (read the name as is)."""
    if not ((always or config["hub"]["prefetch"]) and name and hub_repo(name)):
        return None
    return f"{HUB_DIR}/{kind}/{snapshot_name(name, revision)}"


def model_keys():
    """The model keys that change a loaded model's outputs."""
    return [f"model.{k}" for k in ("revision", "dtype", "attn_implementation")]


def job_gpus(wildcards, resources):
    """GPUs the profile gives the job (0 on CPU), for the command rules'
    --gpus (a job given GPUs fails at start without CUDA); not recorded."""
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


def get_final_output():
    """Everything `snakemake all` builds: what each stage added."""
    return list(_FINAL_TARGETS)
