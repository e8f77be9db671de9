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

from lorascope.core.config import ConfigError, section, validate
from lorascope.core.models import base_model_path as base_model_location

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
    python = python_bin()
    if gpus <= 1:
        return python
    fsdp = config["train"]["fsdp_config"] or "workflow/accelerate/fsdp.yaml"
    # accelerate sits beside the interpreter (a conda env puts both on PATH).
    accelerate = os.path.join(os.path.dirname(python), "accelerate")
    return f"{accelerate} launch --config_file {fsdp} --num_processes {gpus}"


def train_targets():
    return [res("components.parquet"), res("train/full/model")]


# --- stage toy (used by workflow/rules/toy.smk) ---


def toy_shipped_model(wildcards):
    """The shipped weights are an input only when they are copied, not rebuilt."""
    shipped = os.path.join(workflow.basedir, "resources", "toy", "base_model")
    return [] if config["toy"]["rebuild"] else shipped


# --- stage adapters (used by workflow/rules/adapters.smk) ---


def ablated_group(wildcards):
    """The component group a derived variant removes."""
    return {"rank1-attn-ablated": "attn", "rank1-mlp-ablated": "mlp"}[wildcards.variant]


# --- stage evaluation (used by workflow/rules/evaluation.smk) ---


def eval_targets():
    return [
        *expand(res("eval/{variant}/summary.json"), variant=VARIANTS),
        *expand(
            res("tables/{table}.{ext}"),
            table=["table1", "table2"],
            ext=["parquet", "md"],
        ),
    ]


def eval_keys(*keys):
    """Only the eval keys a rule depends on; changing, say, bootstrap_samples
    must not rerun generation."""
    return {k: EVAL[k] for k in keys}


def bench_source(wildcards):
    """Toy benchmarks come from the toy world; hub ones need no input file."""
    if wildcards.benchmark.startswith("toy_"):
        return res(f"toy/bench/{wildcards.benchmark}.parquet")
    return []


def variant_model(variant):
    """(model dir, adapter dir or None) a variant generates with."""
    if variant == "full":
        return res("train/full/model"), None
    adapter = {"rank1": res("train/rank1/adapter")}.get(
        variant, res(f"adapters/{variant}")
    )
    return base_model_path(), (None if variant == "base" else adapter)


def engine_models(wildcards):
    return {v: variant_model(v) for v in ENGINES[wildcards.engine]}


def engine_inputs(wildcards):
    models = engine_models(wildcards).values()
    local = [m for m, _ in models if m.startswith("results/")]
    return {
        "bench": expand(res("data/bench/{benchmark}.parquet"), benchmark=BENCHMARKS),
        "models": sorted(set(local + [a for _, a in models if a])),
        "base": base_model_input(),
    }


def generation_spec(wildcards):
    """Everything one generation job reads, as JSON for its command line."""
    keys = ("backend", "max_new_tokens", "batch_size", "context_length")
    return json.dumps(
        {
            "models": engine_models(wildcards),
            "base": base_model_path(),
            "eval": eval_keys(*keys, "think_prefill", "vllm"),
            "model": cfg("model"),
            "system_prompt": config["data"]["system_prompt"],
            "device": config["device"],
            "seed": config["seed"],
        }
    )


def generation_python(wildcards=None):
    """The interpreter of generation jobs: eval.vllm.python with backend vllm
    (relative to the repository), else the one python_bin() gives."""
    path = EVAL["vllm"]["python"]
    if EVAL["backend"] != "vllm" or path is None:
        return python_bin()
    full = os.path.join(workflow.basedir, path)
    if not (os.path.isfile(full) and os.access(full, os.X_OK)):
        raise WorkflowError(
            f"eval.backend is 'vllm' and eval.vllm.python is {path!r}, but "
            f"{full} is not an executable: build it with `make vllm-env` (the "
            "README's setup does), point eval.vllm.python at a Python that "
            "has vllm, or set eval.backend: hf"
        )
    return full


def generations_of(wildcards):
    return res(f"eval/generations/{ENGINE_OF[wildcards.variant]}")


def table_inputs(wildcards):
    variants = (
        ["base", "rank1", "full"]
        if wildcards.table == "table1"
        else ["base", *LORA_VARIANTS]
    )
    return expand(
        res("eval/{variant}/{benchmark}.parquet"),
        variant=variants,
        benchmark=BENCHMARKS,
    )


# --- stage activations (used by workflow/rules/activations.smk) ---


def activations_targets():
    return [
        res(f"features/{kind}/{name}.parquet")
        for kind in ("lora", "mlp")
        for name in ("features", "topk", "contexts")
    ]


def extract_settings(wildcards=None):
    """activations config minus display-only keys: changing them keeps shards."""
    return {k: v for k, v in cfg("activations").items() if k != "context_width"}


def extraction_model(wildcards=None):
    """The model keys that change the measured values (not full_finetune)."""
    m = cfg("model")
    return {k: m.get(k) for k in ("base", "revision", "dtype", "attn_implementation")}


# --- stage sae (used by workflow/rules/sae.smk) ---


def sae_targets():
    return [
        res("sae/metrics.json"),
        *expand(res("features/sae/{table}.parquet"), table=SAE_TABLES),
    ]


def sae_params(wildcards):
    """The `sae:` section plus the top-level seed/device it inherits when null."""
    return {"seed": config["seed"], "device": config["device"], "sae": cfg("sae")}


# --- stage autointerp (used by workflow/rules/autointerp.smk) ---


def autointerp_targets():
    return [
        res("autointerp/usage.json"),
        *expand(res("autointerp/summary/{name}.parquet"), name=AUTOINTERP_SUMMARIES),
    ]


def autointerp_params(wildcards=None):
    """The autointerp section, the run tag for the spend ledger, the cache path."""
    section = cfg("autointerp")
    cache = section["cache"]
    return {
        "section": section,
        "run": RUN,
        "cache": cache if os.path.isabs(cache) else res(cache),
    }


# --- stage figures (used by workflow/rules/figures.smk) ---


def figures_targets():
    return expand(res("figures/{name}.{ext}"), name=FIGURES, ext=["png", "pdf"])


def figure_code(*modules):
    """The package files a figure (or the dashboards) is drawn by: editing them
    reruns it."""
    pkg = os.path.join(workflow.basedir, "src", "lorascope")
    return [os.path.join(pkg, m) for m in modules]


def figure_style(wildcards=None):
    return {k: config["figures"][k] for k in ("width_in", "font_size", "dpi")}


def figure_outputs(name):
    return {
        "png": report(
            res(f"figures/{name}.png"),
            caption=f"../report/{name}.rst",
            category=FIGURES[name],
        ),
        "pdf": res(f"figures/{name}.pdf"),
    }


def table_columns(wildcards):
    return config["figures"]["tables"][wildcards.table]


# --- stage dashboards (used by workflow/rules/dashboards.smk) ---


def dashboards_targets():
    return [res("dashboards")]


def dashboard_inputs(wildcards):
    kinds = config["figures"]["dashboards"]["kinds"]
    return {
        f"{part}_{kind}": res(path.format(kind=kind))
        for kind in kinds
        for part, path in (
            ("features", "features/{kind}/features.parquet"),
            ("contexts", "features/{kind}/contexts.parquet"),
            ("explanations", "autointerp/explanations/{kind}.parquet"),
            ("assignments", "autointerp/assignments/{kind}.parquet"),
            ("scores", "autointerp/scores/{kind}.parquet"),
        )
    }


# --- stage ablation (used by workflow/rules/ablation.smk) ---


def ablation_targets():
    return [
        *expand(res("ablation/{table}.parquet"), table=KL_TABLES),
        res("steering/sweep.parquet"),
    ]


def ablation_params(wildcards):
    """The config sections the KL ablation reads (a change reruns it)."""
    return {k: config[k] for k in ("seed", "device", "model", "ablation")}


def steering_params(wildcards):
    """The config sections the steering sweep reads."""
    keys = ("seed", "device", "model", "data", "eval", "ablation", "steering")
    return {k: config[k] for k in keys}


def steering_benchmark():
    return config["steering"]["benchmark"] or config["eval"]["benchmarks"][0]


def steering_sae_inputs(wildcards):
    """SAE model and explanations, only when the sweep can pick SAE features."""
    st = config["steering"]
    explicit = bool(st["components"] or st["sae_latents"])
    auto_sae = not explicit and st["max_sae_features"] > 0
    inputs = {}
    if st["sae_latents"] or auto_sae:
        inputs["sae"] = res("sae/model")
    if auto_sae:
        inputs["sae_features"] = res("features/sae/features.parquet")
        inputs["explanations"] = res("autointerp/explanations/sae.parquet")
    return inputs


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
        *dashboards_targets(),
    ]
