# Helpers shared by every stage; no rules here. Validates the config before
# any job is scheduled, defines where outputs and logs go, and states what each
# rule depends on so that a rerun rebuilds exactly what a change invalidated.
#
# Wiring conventions (docs/ARCHITECTURE.md explains them with examples):
# - params carry only the config a rule reads, e.g. `cfg("sae")` (a section),
#   `cfg("eval", "ci", "limit")` (some keys), `config_of("seed", "model.dtype")`
#   (keys of several sections), `setting("eval.ci")` (one value). A job that
#   reads a key its rule did not declare fails naming it (UndeclaredKey).
# - keys in RUNTIME_KEYS (lorascope/core/wiring.py: batch sizes for memory,
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
from lorascope.hub.names import is_hub_id, snapshot_name


def hub_benchmarks():
    """The benchmark registry's names (imported only when a hub name is used)."""
    from lorascope.evaluation.benchmarks import BENCHMARKS

    return list(BENCHMARKS)


SCHEMA = load_schema()
use_disk_cache(".snakemake/lorascope/code_hashes.json")
try:
    validate(config, SCHEMA, benchmarks=hub_benchmarks)
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
    if model["base"] == "toy":
        return res("toy/base_model")
    snapshot = prefetched("model", model["base"], model["revision"])
    return snapshot or (model["base"] if os.path.isdir(model["base"]) else [])


# --- hub snapshots (used by workflow/rules/hub.smk and the loading rules) ------

HUB_DIR = config["hub"]["dir"]


def hub_repo(name):
    """Whether a model/dataset name is read from the hub (not toy, not local)."""
    return name not in ("toy", "train") and not os.path.exists(name) and is_hub_id(name)


def prefetched(kind, name, revision, always=False):
    """The local snapshot `name` is read from when hub.prefetch is on (or
    `always`; made by the hub_fetch rule), else None (read the name as is)."""
    if not ((always or config["hub"]["prefetch"]) and name and hub_repo(name)):
        return None
    return f"{HUB_DIR}/{kind}/{snapshot_name(name, revision)}"


def gated_repos():
    """Hub repos that need HF_TOKEN (GPQA): only hub_fetch reads the token."""
    from lorascope.evaluation.benchmarks import BENCHMARKS

    return sorted(spec.hub_id for spec in BENCHMARKS.values() if spec.gated)


def model_keys():
    """The model keys that change a loaded model's outputs."""
    return [f"model.{k}" for k in ("revision", "dtype", "attn_implementation")]


def python_bin():
    """The interpreter shell rules run: the conda env's under --sdm conda,
    else the one running Snakemake (a venv need not be activated)."""
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python"
    return sys.executable


def launcher(wildcards, resources):
    """One process on CPU / one GPU; accelerate + FSDP when the profile gives more.
    (Computed from resources, so Snakemake does not record it: a moved
    interpreter reruns nothing.)"""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    python = python_bin()
    if gpus <= 1:
        return python
    fsdp = config["train"]["fsdp_config"] or "workflow/accelerate/fsdp.yaml"
    # accelerate sits beside the interpreter (a conda env puts both on PATH).
    accelerate = os.path.join(os.path.dirname(python), "accelerate")
    return f"{accelerate} launch --config_file {fsdp} --num_processes {gpus}"


# --- stage toy (used by workflow/rules/toy.smk) ---


def toy_model_keys():
    """Copying the shipped model reads only `rebuild`; pretraining reads more."""
    return ("rebuild", "seed", "pretrain") if config["toy"]["rebuild"] else ("rebuild",)


def toy_shipped_files():
    """The shipped weights (repo-relative), versioned by content when copied."""
    return [] if config["toy"]["rebuild"] else ["resources/toy/base_model"]


def toy_bench_config(wildcards):
    """toy.seed and this benchmark's own toy.benchmarks entry: adding or
    changing another benchmark reruns nothing of this one."""
    if wildcards.name not in config["toy"]["benchmarks"]:
        raise WorkflowError(
            f"toy benchmark {wildcards.name!r} is not in toy.benchmarks "
            f"(configured: {', '.join(config['toy']['benchmarks']) or 'none'})"
        )
    return config_of("toy.seed", f"toy.benchmarks.{wildcards.name}")["toy"]


# --- stage data (used by workflow/rules/data.smk) ---


def toy_sft_input(wildcards):
    return [res("toy/s1k.parquet")] if config["data"]["dataset"] == "toy" else []


def sft_snapshot(wildcards):
    """The SFT dataset's local snapshot, with hub.prefetch."""
    data = config["data"]
    snapshot = prefetched("dataset", data["dataset"], data["revision"])
    return [snapshot] if snapshot else []


def sft_data_files(wildcards):
    """Local SFT files (data.data_files) are inputs: an edit reruns the set."""
    files = config["data"]["data_files"]
    if config["data"]["dataset"] not in ("parquet", "json", "csv") or not files:
        return []
    return [files] if isinstance(files, str) else list(files)


# --- stage train (used by workflow/rules/train.smk) ---


def train_targets():
    return [res("components.parquet"), res("train/full/model")]


def train_settings(variant):
    """What training `variant` reads (the full fine-tune has no LoRA)."""
    keys = ["bf16", "gradient_checkpointing", "logging_steps", "save_steps", variant]
    keys += ["lora"] if variant == "rank1" else []
    return config_of("seed", "device", *model_keys(), *(f"train.{k}" for k in keys))


def adapter_source(wildcards):
    """An existing adapter: a local dir, or for a hub id its snapshot (always
    fetched by rule hub_fetch, so the import job needs no network)."""
    model = config["model"]
    snap = prefetched("model", model["adapter"], model["adapter_revision"], True)
    return snap or model["adapter"]


def full_snapshot(wildcards):
    """A named full fine-tune's prefetched snapshot (hub.prefetch), or nothing."""
    model = config["model"]
    name = model["full_finetune"]
    snapshot = prefetched("model", name, model["full_finetune_revision"])
    return [snapshot] if snapshot else []


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
    return cfg("eval", *keys)


def bench_file(name):
    return config["eval"]["benchmark_files"].get(name)


def bench_source(wildcards):
    """Toy benchmarks come from the toy world; a hub one from its local file
    (eval.benchmark_files) when set, else its prefetched snapshot, else from
    the hub (no input)."""
    if wildcards.benchmark.startswith("toy_"):
        return res(f"toy/bench/{wildcards.benchmark}.parquet")
    return bench_file(wildcards.benchmark) or bench_snapshot(wildcards) or []


def bench_snapshot(wildcards):
    """A hub benchmark's local snapshot (hub.prefetch, no local file), or None."""
    name = wildcards.benchmark
    if name.startswith("toy_") or bench_file(name):
        return None
    from lorascope.evaluation.benchmarks import BENCHMARKS

    return prefetched("dataset", BENCHMARKS[name].hub_id, None)


def bench_settings(wildcards):
    """The eval keys one benchmark is prepared with (only its own file)."""
    settings = cfg("eval", "choice_seed", "limit", "duplicate_rows")
    own = bench_file(wildcards.benchmark)
    settings["benchmark_files"] = {wildcards.benchmark: own} if own else {}
    return settings


def generation_settings(wildcards=None):
    """Generation keys of the chosen backend (vLLM schedules its own batches)."""
    backend = config["eval"]["backend"]
    extra = ("vllm",) if backend == "vllm" else ("batch_size",)
    return cfg("eval", "backend", "max_new_tokens", *extra)


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
    """Everything one generation job reads (its --spec): the variants' models,
    where the tokenizer loads from, and the declared config (recorded without
    runtime keys such as eval.vllm.kv_cache_gib)."""
    spec = config_of(
        "seed",
        "device",
        "data.system_prompt",
        *model_keys(),
        *(f"eval.{k}" for k in generation_settings()),
        "eval.context_length",
        "eval.think_prefill",
    )
    spec["models"] = engine_models(wildcards)
    spec["base"] = base_model_path()
    return spec


def job_gpus(wildcards, resources):
    """GPUs the profile gives the job (0 on CPU); not recorded."""
    return int(getattr(resources, "gpu", 0) or 0)


def generation_python(wildcards, resources):
    """The interpreter of generation jobs: eval.vllm.python with backend vllm
    (relative to the repository), else the one python_bin() gives. Computed
    from resources, so Snakemake does not record it: a moved checkout reruns
    nothing."""
    path = EVAL["vllm"]["python"]
    if EVAL["backend"] != "vllm" or path is None:
        return python_bin()
    full = os.path.join(REPO, path)
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


def table_model_inputs(wildcards):
    """Table 1 counts the adapter's and the base model's parameters."""
    if wildcards.table != "table1":
        return {}
    return {"adapter": res("train/rank1/adapter"), "base": base_model_input()}


# --- stage activations (used by workflow/rules/activations.smk) ---


# activations keys read only when the feature tables are built: changing
# them keeps the shards (the streamed top-k state does not depend on them).
FEATURE_TABLE_KEYS = (
    "context_width",
    "min_activation",
    "min_contexts",
    "lora_modules",
    "population_note",
)


def extract_settings(wildcards=None):
    """activations config minus feature-table keys: changing them keeps shards."""
    return cfg("activations", exclude=FEATURE_TABLE_KEYS)


def extraction_model(wildcards=None):
    """The model keys that change the measured values (not full_finetune)."""
    return cfg("model", "revision", "dtype", "attn_implementation")


def activations_targets():
    return [
        res(f"features/{kind}/{name}.parquet")
        for kind in ("lora", "mlp")
        for name in ("features", "topk", "contexts")
    ]


# --- stage sae (used by workflow/rules/sae.smk) ---


def sae_params(wildcards):
    """The `sae:` section plus the top-level seed/device it inherits when null."""
    return config_of("seed", "device", "sae")


def sae_targets():
    return [
        res("sae/metrics.json"),
        *expand(res("features/sae/{table}.parquet"), table=SAE_TABLES),
    ]


# --- stage autointerp (used by workflow/rules/autointerp.smk) ---


def autointerp_targets():
    return [
        res("autointerp/usage.json"),
        *expand(res("autointerp/summary/{name}.parquet"), name=AUTOINTERP_SUMMARIES),
    ]


# What the LLM client of each role reads (autointerp/settings.py), runtime
# knobs included (declared, never recorded).
_LLM_COMMON = ["temperature", "request_params", "parse_retries", "prices"]
_LLM_RUNTIME = ["concurrency", "retries", "timeout_s", "backoff_base_s"]
_LLM_RUNTIME += ["backoff_max_s", "budget", "cache"]
_EXPLAINER = ["provider", "model", "base_url", "api_key_env", "max_output_tokens"]
# What the explainer is shown of each feature (per kind: kind_overrides).
_EXAMPLES = ["n_contexts", "example_window", "shuffle_examples"]
_EXAMPLES += ["max_examples_per_doc", "kind_overrides"]
AUTOINTERP_KEYS = {
    "explain": [*_EXPLAINER, *_EXAMPLES, "tokens_listed", "offline", "seed"],
    "categories": ["categories", "seed"],
    "assign": [*_EXPLAINER, *_EXAMPLES, "categories.n_examples"],
    "score": [*_EXPLAINER, *_EXAMPLES, "detection", "seed"],
    "summary": ["bootstrap_samples", "seed"],
}
# The template files each step renders (autointerp.prompts: a file per name,
# or a directory holding them all).
AUTOINTERP_PROMPT = {
    "explain": ["explain"],
    "categories": ["categories", "subcategories", "sae_categories"],
    "assign": ["assign"],
    "score": ["detect"],
}


def autointerp_params(step):
    """What autointerp step `step` reads: its `autointerp:` keys (section),
    the run tag of the spend ledger, and the cache path (runtime: a moved
    cache reruns nothing)."""
    keys = list(AUTOINTERP_KEYS[step])
    if step != "summary":
        # Only this step's templates: another step's template path is not
        # a reason to rerun it.
        names = ["dir", *AUTOINTERP_PROMPT[step]]
        keys += _LLM_COMMON + _LLM_RUNTIME + [f"prompts.{n}" for n in names]
    section = config_of(*(f"autointerp.{k}" for k in keys))["autointerp"]
    cache = config["autointerp"]["cache"]
    cache = cache if os.path.isabs(cache) else res(cache)
    # Path "autointerp": its "cache" entry is the runtime key autointerp.cache.
    return JobConfig({"section": section, "run": RUN, "cache": cache}, "autointerp")


def autointerp_prompts(step):
    """The user's prompt template files step `step` reads: inputs, so an edit
    in place reruns the step (also with the offline explainer, for
    simplicity)."""
    prompts = config["autointerp"]["prompts"]
    files = []
    for name in AUTOINTERP_PROMPT[step]:
        if prompts[name]:
            files.append(prompts[name])
        elif prompts["dir"]:
            files.append(os.path.join(prompts["dir"], f"{name}.txt"))
    return files


# --- stage figures (used by workflow/rules/figures.smk) ---


def figures_targets():
    return expand(res("figures/{name}.{ext}"), name=FIGURES, ext=["png", "pdf"])


def figure_style(wildcards=None):
    return cfg("figures", "width_in", "font_size", "dpi")


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
    return setting(f"figures.tables.{wildcards.table}")


# --- stage dashboards (used by workflow/rules/dashboards.smk) ---


def dashboards_targets():
    return [res("dashboards")]


def dashboard_inputs(wildcards):
    kinds = config["figures"]["dashboards"]["kinds"]
    accuracy = {"feature_accuracy": p for p in feature_accuracy_targets()}
    return accuracy | {
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
        res("ablation/feature_kl.parquet"),
        res("ablation/direct_effects.parquet"),
        res("ablation/sae_decoder.parquet"),
        *feature_accuracy_targets(),
    ]


def feature_accuracy_targets():
    """Feature / component ablation accuracy, unless causal.accuracy_top_n is 0."""
    if config["causal"]["accuracy_top_n"] == 0:
        return []
    return [res("ablation/feature_accuracy.parquet")]


def feature_accuracy_benchmark():
    return config["causal"]["accuracy_benchmark"] or config["eval"]["benchmarks"][0]


def feature_accuracy_params(wildcards):
    """What the feature-accuracy job reads: the LoRA's loading, the variants,
    generation and grading as evaluation does them, the backtracking words."""
    keys = ["ablation.seed", "ablation.device", "data.system_prompt"]
    causal = ("accuracy_top_n", "accuracy_limit", "accuracy_max_new_tokens")
    keys += [f"causal.{k}" for k in causal]
    if config["causal"]["accuracy_max_new_tokens"] is None:
        keys += ["eval.max_new_tokens"]
    keys += ["eval.batch_size"]
    keys += ["eval.grade_without_answer_marker", "eval.bootstrap_samples"]
    keys += ["steering.backtrack_words"]
    return config_of("seed", "device", *model_keys(), *keys)


def ablation_params(wildcards):
    """The config the KL ablation reads (a change reruns it)."""
    return config_of("seed", "device", *model_keys(), "ablation")


def feature_ablation_params(wildcards):
    """The KL ablation's config (same sequences) and the feature subset size."""
    return config_of("seed", "device", *model_keys(), "ablation", "causal.kl_sequences")


def direct_effect_params(wildcards):
    """What the direct-effect job reads to load the LoRA (no sequences)."""
    keys = ("ablation.seed", "ablation.device")
    return config_of("seed", "device", *model_keys(), *keys)


def steering_params(wildcards):
    """The config the steering sweep reads; eval's generation budget and
    batch only where steering leaves its own null."""
    st = config["steering"]
    ablation = ["seed", "device", "n_sequences", "max_tokens", "token_scope"]
    ablation += ["draw_rng", "average", "logit_chunk"]
    keys = [*model_keys(), "data.system_prompt", "steering"]
    keys += [f"ablation.{k}" for k in ablation]
    keys += ["eval.grade_without_answer_marker"]
    keys += [f"eval.{k}" for k in ("max_new_tokens", "batch_size") if st[k] is None]
    return config_of("seed", "device", *keys)


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
    if auto_sae and st["sae_select"] != "keyword":
        inputs["feature_kl"] = res("ablation/feature_kl.parquet")
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
