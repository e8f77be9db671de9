# Stage 'diffing': what the rank-1 adapter captures of what full fine-tuning
# changed (issue 32): residual-stream shares per layer, KL per token, Table 3.

from lorascope.diffing.checks import compatibility_problems


def check_full_finetune():
    """A named full fine-tune must have the base's architecture, width, depth
    and tokenizer: checked here, before any job, when both are on disk (a
    local or prefetched full fine-tune; the toy, a local or prefetched
    base); rule model_diff checks again before it writes (hub ids). A
    trained one is the base's by construction."""
    if config["model"]["full_finetune"] == "train":
        return
    full = full_local() or full_snapshot(None)
    base = base_model_input() or []
    if is_toy(config["model"]["base"]) and not os.path.isdir(base):
        base = os.path.join(REPO, "resources", "toy", "base_model")  # shipped
    if not full or not base:
        return
    problems = compatibility_problems(
        base, full[0], config["model"]["base"], config["model"]["full_finetune"]
    )
    if problems:
        raise WorkflowError(
            "model.full_finetune cannot be compared with model.base (rule "
            "model_diff, Table 1's full row):\n  " + "\n  ".join(problems)
        )


check_full_finetune()


def diffing_params(wildcards):
    """What the diff reads: the loaded models' keys, its own section."""
    return config_of("seed", "device", *model_keys(), "diffing")


def diffing_inputs(wildcards):
    """The SAE only when its top features' writes are measured or its
    features are compared with Δh_full's principal directions."""
    d = config["diffing"]
    if d["sae_top_n"] == 0 and d["principal_directions"] == 0:
        return {}
    return {
        "sae": res("sae/model"),
        "sae_features": res("features/sae/features.parquet"),
    }


def diffing_bench():
    """The benchmarks whose prompts + the full fine-tune's generations are
    diffed (none when diffing.bench_limit is 0)."""
    if config["diffing"]["bench_limit"] == 0:
        return []
    return EVAL_BENCHMARKS


def diffing_generations(wildcards):
    """The full fine-tune's raw generations (its engine's folder, one parquet
    per benchmark): not the graded tables, so a grader edit reruns nothing here."""
    if not diffing_bench():
        return []
    return res(f"eval/generations/{ENGINE_OF['full']}")


DIFF_TABLES = [
    "residual",
    "kl_layers",
    "table3",
    "contexts",
    "feature_pcs",
    "tokens",
]


rule model_diff:
    input:
        unpack(diffing_inputs),
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        full=res("train/full/model"),
        full_local=full_local,
        generations=diffing_generations,
        base=base_model_input,
    output:
        **{t: res(f"diffing/{t}.parquet") for t in DIFF_TABLES},
        table3_md=res("diffing/table3.md"),
        layers_md=res("diffing/residual.md"),
    log:
        log_("diffing/model_diff.log"),
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("model_diff"),
    params:
        config=diffing_params,
        base=base_model_path,
        benchmarks=diffing_bench(),
        user_files=user_files_of(base_model_input, full_local),
        code=code_of("diffing_models.py"),
    script:
        "../scripts/diffing_models.py"


final_targets(*expand(res("diffing/{table}.parquet"), table=DIFF_TABLES))
