# Stage 'autointerp' (paper §3.1, App. B): an explanation and monosemanticity
# class per LoRA direction, MLP neuron and SAE feature; categories proposed from
# equal LoRA/MLP samples; one category per feature; detection scores; summaries.
# LLM replies are cached in autointerp.cache, so reruns never pay twice.

# What the LLM client of each role reads (autointerp/settings.py), runtime
# knobs included (declared, never recorded).
_LLM_COMMON = ["temperature", "request_params", "parse_retries", "prices"]
_LLM_RUNTIME = ["concurrency", "retries", "timeout_s", "backoff_base_s"]
_LLM_RUNTIME += ["backoff_max_s", "budget", "cache"]
_EXPLAINER = ["provider", "model", "base_url", "api_key_env", "max_output_tokens"]
# What the explainer is shown of each feature (per kind: kind_overrides).
_EXAMPLES = ["n_contexts", "example_window", "shuffle_examples"]
_EXAMPLES += ["max_examples_per_doc", "kind_overrides"]
# The explanation scores and the explain/score split they read.
_SCORERS = ["scorers", "split", "fuzzing", "simulation"]
AUTOINTERP_KEYS = {
    "explain": [*_EXPLAINER, *_EXAMPLES, "tokens_listed", "offline", "seed", "split"],
    # The categorizer follows the explainer where its own keys are null.
    "categories": ["categories", "seed", *_EXPLAINER[:4]],
    "assign": [*_EXPLAINER, *_EXAMPLES, "categories.n_examples"],
    "score": [*_EXPLAINER, *_EXAMPLES, "detection", "seed", *_SCORERS],
    "summary": ["bootstrap_samples", "seed"],
}
# The template files each step renders (autointerp.prompts: a file per name,
# or a directory holding them all).
AUTOINTERP_PROMPT = {
    "explain": ["explain"],
    "categories": ["categories", "subcategories", "sae_categories"],
    "assign": ["assign"],
    "score": ["detect", "fuzz", "simulate"],
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


AUTOINTERP_SUMMARIES = ["classes", "category_shares", "sae_category_density", "scores"]


rule autointerp_explain:
    input:
        features=mres("features/{kind}/features.parquet"),
        contexts=mres("features/{kind}/contexts.parquet"),
        prompts=autointerp_prompts("explain"),
    output:
        explanations=mres("autointerp/explanations/{kind}.parquet"),
        usage=mres("autointerp/usage/explain_{kind}.parquet"),
    log:
        mlog("autointerp/explain_{kind}.log"),
    priority: rule_priority("autointerp_explain")
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("autointerp_explain"),
    params:
        ai=autointerp_params("explain"),
        user_files=user_files_of(autointerp_prompts("explain")),
        code=code_of("autointerp_explain.py"),
    script:
        "../scripts/autointerp_explain.py"


rule autointerp_categories:
    input:
        explanations=expand(
            res("{{member}}autointerp/explanations/{kind}.parquet"), kind=KINDS
        ),
        prompts=autointerp_prompts("categories"),
    output:
        categories=mres("autointerp/categories.json"),
        usage=mres("autointerp/usage/categories.parquet"),
    log:
        mlog("autointerp/categories.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("autointerp_categories"),
    params:
        ai=autointerp_params("categories"),
        user_files=user_files_of(autointerp_prompts("categories")),
        code=code_of("autointerp_categories.py"),
        kinds=KINDS,
    script:
        "../scripts/autointerp_categories.py"


rule autointerp_assign:
    input:
        categories=mres("autointerp/categories.json"),
        explanations=mres("autointerp/explanations/{kind}.parquet"),
        contexts=mres("features/{kind}/contexts.parquet"),
        prompts=autointerp_prompts("assign"),
    output:
        assignments=mres("autointerp/assignments/{kind}.parquet"),
        usage=mres("autointerp/usage/assign_{kind}.parquet"),
    log:
        mlog("autointerp/assign_{kind}.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("autointerp_assign"),
    params:
        ai=autointerp_params("assign"),
        user_files=user_files_of(autointerp_prompts("assign")),
        code=code_of("autointerp_assign.py"),
    script:
        "../scripts/autointerp_assign.py"


rule autointerp_score:
    input:
        explanations=mres("autointerp/explanations/{kind}.parquet"),
        contexts=mres("features/{kind}/contexts.parquet"),
        prompts=autointerp_prompts("score"),
    output:
        scores=mres("autointerp/scores/{kind}.parquet"),
        usage=mres("autointerp/usage/score_{kind}.parquet"),
    log:
        mlog("autointerp/score_{kind}.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("autointerp_score"),
    params:
        ai=autointerp_params("score"),
        user_files=user_files_of(autointerp_prompts("score")),
        code=code_of("autointerp_score.py"),
    script:
        "../scripts/autointerp_score.py"


rule autointerp_summary:
    input:
        explanations=expand(
            res("{{member}}autointerp/explanations/{kind}.parquet"), kind=KINDS
        ),
        assignments=expand(
            res("{{member}}autointerp/assignments/{kind}.parquet"), kind=KINDS
        ),
        scores=expand(res("{{member}}autointerp/scores/{kind}.parquet"), kind=KINDS),
        sae_features=mres("features/sae/features.parquet"),
        categories=mres("autointerp/categories.json"),
        usage=expand(
            res("{{member}}autointerp/usage/{step}_{kind}.parquet"),
            step=["explain", "assign", "score"],
            kind=KINDS,
        ),
        usage_categories=mres("autointerp/usage/categories.parquet"),
    output:
        summaries=expand(
            res("{{member}}autointerp/summary/{name}.parquet"),
            name=AUTOINTERP_SUMMARIES,
        ),
        usage=mres("autointerp/usage.json"),
    log:
        mlog("autointerp/summary.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("autointerp_summary"),
    params:
        ai=autointerp_params("summary"),
        code=code_of("autointerp_summary.py"),
        kinds=KINDS,
    script:
        "../scripts/autointerp_summary.py"


final_targets(
    *member_targets(
        "autointerp/usage.json",
        *(f"autointerp/summary/{name}.parquet" for name in AUTOINTERP_SUMMARIES),
    )
)
