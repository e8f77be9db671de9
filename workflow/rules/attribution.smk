# Stage 'attribution': every LoRA direction's and SAE feature's first-order
# effect on target metrics in one pass (feature_attribution, with its
# validation against exact removal), and the top features per target removed
# or added alone during generation against random sets (behaviour_sets).


def attribution_params(wildcards):
    """The LoRA's loading and the ablation draw (same sequences as the KL
    ablations), the attribution section's keys the job reads."""
    keys = ["ablation.seed", "ablation.device", "ablation.n_sequences"]
    keys += [
        "ablation.max_tokens",
        "ablation.draw_rng",
        "ablation.variants_per_forward",
    ]
    att = ("targets", "backtrack_tokens", "n_sequences", "ig_steps")
    att += ("validate_sequences", "trust_rho", "bootstrap_samples")
    keys += [f"attribution.{k}" for k in att]
    return config_of("seed", "device", *model_keys(), *keys)


def behaviour_sets_targets():
    """The behaviour sets' table (of every sweep member), unless
    attribution.set_targets is []."""
    if not config["attribution"]["set_targets"]:
        return []
    return member_targets("attribution/sets.parquet")


def behaviour_sets_benchmark():
    return config["attribution"]["sets_benchmark"] or EVAL_BENCHMARKS[0]


def behaviour_sets_params(wildcards):
    """Loading, the sets, generation and grading as evaluation does them."""
    keys = ["ablation.seed", "ablation.device", "data.system_prompt"]
    att = ("backtrack_tokens", "set_size", "set_targets", "random_sets")
    att += ("sets_limit", "sets_max_new_tokens", "sets_batch_size", "bootstrap_samples")
    keys += [f"attribution.{k}" for k in att]
    if config["attribution"]["sets_max_new_tokens"] is None:
        keys += ["eval.max_new_tokens"]
    keys += ["eval.batch_size", "eval.grade_without_answer_marker"]
    return config_of("seed", "device", *model_keys(), *keys)


rule feature_attribution:
    input:
        sft=res("data/sft.parquet"),
        adapter=mres("train/rank1/adapter"),
        components=mres("components.parquet"),
        sae=mres("sae/model"),
        sae_features=mres("features/sae/features.parquet"),
        lora_features=mres("features/lora/features.parquet"),
        base=base_model_input,
    output:
        table=mres("attribution/features.parquet"),
        md=mres("attribution/features.md"),
        exact=mres("attribution/exact.parquet"),
        validation=mres("attribution/validation.parquet"),
        validation_md=mres("attribution/validation.md"),
    log:
        mlog("attribution/feature_attribution.log"),
    priority: rule_priority("feature_attribution")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("feature_attribution"),
    params:
        config=attribution_params,
        base=base_model_path,
        user_files=user_files_of(base_model_input),
        code=code_of("attribution_features.py"),
    script:
        "../scripts/attribution_features.py"


rule behaviour_sets:
    input:
        adapter=mres("train/rank1/adapter"),
        components=mres("components.parquet"),
        sae=mres("sae/model"),
        attribution=mres("attribution/features.parquet"),
        bench=res(f"data/bench/{behaviour_sets_benchmark()}.parquet"),
        base=base_model_input,
    output:
        table=mres("attribution/sets.parquet"),
        md=mres("attribution/sets.md"),
    log:
        mlog("attribution/behaviour_sets.log"),
    priority: rule_priority("behaviour_sets")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("behaviour_sets"),
    params:
        config=behaviour_sets_params,
        base=base_model_path,
        benchmark=behaviour_sets_benchmark(),
        user_files=user_files_of(base_model_input),
        code=code_of("attribution_sets.py"),
    script:
        "../scripts/attribution_sets.py"


final_targets(
    *member_targets("attribution/features.parquet", "attribution/validation.parquet"),
    *behaviour_sets_targets(),
)
