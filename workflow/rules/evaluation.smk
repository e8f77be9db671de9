# Stage 'evaluation': benchmarks, generation, grading, Tables 1 and 2 (paper §2).
#
# Generation is split from grading: a generation job writes raw completions to
# eval/generations/{engine}/ and cheap per-benchmark grading jobs read them, so
# a grader change never reruns generation. Which variants a job serves:
# lorascope.evaluation.engines (backend hf: one each; vllm: one engine for the
# base and its LoRAs, a second for the full fine-tune, in the same job or not).
# Generation is a command (python -m lorascope.evaluation), not a script:
# vLLM runs in its own interpreter (eval.vllm.python) and spawns its engine.
import shlex

from lorascope.evaluation.engines import engine_groups
from lorascope.workflow.warm.jobs import python_command


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
    if is_toy_benchmark(wildcards.benchmark):
        return res(f"toy/bench/{wildcards.benchmark}.parquet")
    return bench_file(wildcards.benchmark) or bench_snapshot(wildcards) or []


def bench_snapshot(wildcards):
    """A hub benchmark's local snapshot (hub.prefetch, no local file), or None."""
    name = wildcards.benchmark
    if is_toy_benchmark(name) or bench_file(name):
        return None
    from lorascope.evaluation.benchmarks import BENCHMARKS as REGISTRY

    return prefetched("dataset", REGISTRY[name].hub_id, None)


def bench_settings(wildcards):
    """The eval keys one benchmark is prepared with (only its own file)."""
    from lorascope.evaluation.benchmarks import eval_keys

    settings = cfg("eval", *eval_keys(wildcards.benchmark))
    own = bench_file(wildcards.benchmark)
    settings["benchmark_files"] = {wildcards.benchmark: own} if own else {}
    return settings


def generation_settings(wildcards=None):
    """Generation keys of the chosen backend (vLLM schedules its own batches)."""
    backend = config["eval"]["backend"]
    extra = ("vllm",) if backend == "vllm" else ("batch_size",)
    return cfg("eval", "backend", "max_new_tokens", *extra)


def variant_model(variant, member=""):
    """(model dir, adapter dir or None) a variant generates with (a LoRA
    variant: that of sweep member `member`)."""
    if variant == "full":
        return res("train/full/model"), None
    adapter = {"rank1": res(f"{member}train/rank1/adapter")}.get(
        variant, res(f"{member}adapters/{variant}")
    )
    return base_model_path(), (None if variant == "base" else adapter)


def engines_of(member):
    """A sweep member's generation engines: the default member's serve the
    base and the full fine-tune too, another member's only its LoRAs (the
    base and full generations are shared)."""
    return ENGINES if member == "" else MEMBER_ENGINES


def engine_models(wildcards):
    engines = engines_of(wildcards.member)
    return {v: variant_model(v, wildcards.member) for v in engines[wildcards.engine]}


def engine_inputs(wildcards):
    models = engine_models(wildcards).values()
    local = [m for m, _ in models if m.startswith("results/")]
    return {
        "bench": expand(
            res("data/bench/{benchmark}.parquet"), benchmark=EVAL_BENCHMARKS
        ),
        "models": sorted(set(local + [a for _, a in models if a])),
        "base": base_model_input(),
        # The full fine-tune's POINTER.json names a local dir: read here.
        "full": full_local() if "full" in engine_models(wildcards) else [],
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
        "eval.budget_forcing",
    )
    spec["models"] = engine_models(wildcards)
    spec["base"] = base_model_path()
    return spec


def generation_python(wildcards, resources):
    """The interpreter of generation jobs: eval.vllm.python with backend vllm
    (relative to the repository), else the one python_bin() gives. Computed
    from resources, so Snakemake does not record it: a moved checkout reruns
    nothing. Shell words, quoted here: in a local run the interpreter
    runs through the warm interpreter's client where it is the same."""
    path = EVAL["vllm"]["python"]
    if EVAL["backend"] != "vllm" or path is None:
        return python_command(python_bin(), job_gpus(wildcards, resources))
    full = os.path.join(REPO, path)
    if not (os.path.isfile(full) and os.access(full, os.X_OK)):
        raise WorkflowError(
            f"eval.backend is 'vllm' and eval.vllm.python is {path!r}, but "
            f"{full} is not an executable: build it with `make vllm-env` (the "
            "README's setup does), point eval.vllm.python at a Python that "
            "has vllm, or set eval.backend: hf"
        )
    return shlex.quote(full)


def generations_of(wildcards):
    engine_of = ENGINE_OF if wildcards.member == "" else MEMBER_ENGINE_OF
    if wildcards.variant not in engine_of:  # base/full of a sweep member
        raise WorkflowError(
            f"{wildcards.variant} is generated once, at {res('eval/')}, not per "
            f"sweep member ({wildcards.member})"
        )
    return mres(f"eval/generations/{engine_of[wildcards.variant]}", wildcards)


def table_inputs(wildcards):
    """A member's table: its LoRA variants, the shared base and full."""
    variants = (
        ["base", "rank1", "full"]
        if wildcards.table == "table1"
        else ["base", *LORA_VARIANTS]
    )
    shared = ("base", "full")  # generated once, at the run's root
    return [
        res(f"{'' if v in shared else wildcards.member}eval/{v}/{b}.parquet")
        for v in variants
        for b in EVAL_BENCHMARKS
    ]


def table_model_inputs(wildcards):
    """Table 1 counts the adapter's and the base model's parameters."""
    if wildcards.table != "table1":
        return {}
    adapter = mres("train/rank1/adapter", wildcards)
    return {"adapter": adapter, "base": base_model_input()}


EVAL = config["eval"]

ENGINES, MEMBER_ENGINES = engine_groups(
    EVAL["backend"], EVAL["vllm"], config["device"], VARIANTS, list(ABLATED_GROUP)
)
ENGINE_OF = {v: e for e, vs in ENGINES.items() for v in vs}
MEMBER_ENGINE_OF = {v: e for e, vs in MEMBER_ENGINES.items() for v in vs}


wildcard_constraints:
    engine="|".join({*ENGINES, *MEMBER_ENGINES}),
    table="table1|table2",


rule bench_prepare:
    input:
        source=bench_source,
    output:
        bench=res("data/bench/{benchmark}.parquet"),
    log:
        log_("eval/bench_prepare_{benchmark}.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("bench_prepare"),
    params:
        eval=bench_settings,
        toy_dir=res("toy/bench"),
        snapshot=bench_snapshot,
        user_files=user_files_of(bench_source),
        code=code_of("eval_bench.py"),
    script:
        "../scripts/eval_bench.py"


rule eval_generate:
    input:
        unpack(engine_inputs),
    output:
        generations=directory(mres("eval/generations/{engine}")),
    log:
        mlog("eval/eval_generate_{engine}.log"),
    priority: rule_priority("eval_generate")
    conda:
        "../../envs/vllm.yaml"
    resources:
        **resources_for("eval_generate"),
    params:
        python=generation_python,
        spec=generation_spec,
        gpus=job_gpus,
        user_files=user_files_of(engine_inputs),
        code=code_of("lorascope.evaluation"),
    shell:
        "{params.python} -m lorascope.evaluation --spec {params.spec.as_json:q}"
        " --bench {input.bench:q} --out {output.generations:q} --gpus {params.gpus}"
        " > {log:q} 2>&1"


rule eval_grade:
    input:
        bench=res("data/bench/{benchmark}.parquet"),
        generations=generations_of,
    output:
        samples=mres("eval/{variant}/{benchmark}.parquet"),
    log:
        mlog("eval/eval_grade_{variant}_{benchmark}.log"),
    priority: rule_priority("eval_grade")
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("eval_grade"),
    params:
        fallback=setting("eval.grade_without_answer_marker"),
        timeout_s=setting("eval.grade_timeout_s"),
        code=code_of("eval_grade.py"),
    script:
        "../scripts/eval_grade.py"


rule eval_summary:
    input:
        samples=expand(
            res("{{member}}eval/{{variant}}/{benchmark}.parquet"),
            benchmark=EVAL_BENCHMARKS,
        ),
    output:
        summary=mres("eval/{variant}/summary.json"),
    log:
        mlog("eval/eval_summary_{variant}.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("eval_summary"),
    params:
        code=code_of("eval_summary.py"),
    script:
        "../scripts/eval_summary.py"


rule eval_table:
    input:
        unpack(table_model_inputs),
        samples=table_inputs,
    output:
        table=mres("tables/{table}.parquet"),
        markdown=mres("tables/{table}.md"),
    log:
        mlog("eval/eval_table_{table}.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("eval_table"),
    params:
        eval=eval_keys("bootstrap_samples", "ci", "think_prefill", "budget_forcing"),
        rank=lambda wildcards: MEMBER[wildcards.member].rank,
        seed=setting("seed"),
        base=base_model_path,
        revision=setting("model.revision"),
        user_files=user_files_of(table_model_inputs),
        code=code_of("eval_table.py"),
    script:
        "../scripts/eval_table.py"


final_targets(
    *expand(res("eval/{variant}/summary.json"), variant=VARIANTS),
    *member_targets(
        *(f"eval/{v}/summary.json" for v in LORA_VARIANTS),
        *(
            f"tables/{t}.{ext}"
            for t in ("table1", "table2")
            for ext in ("parquet", "md")
        ),
    ),
)
