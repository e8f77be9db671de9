# Stage 'causal': what single SAE features and LoRA directions do: KL of
# removing each (feature_ablation), the tokens each promotes (direct_effects),
# and accuracy with the strongest removed during generation (feature_accuracy).


def feature_accuracy_targets():
    """Feature / component ablation accuracy, unless causal.accuracy_top_n is 0."""
    if config["causal"]["accuracy_top_n"] == 0:
        return []
    return [res("ablation/feature_accuracy.parquet")]


def feature_accuracy_benchmark():
    return config["causal"]["accuracy_benchmark"] or EVAL_BENCHMARKS[0]


def feature_accuracy_params(wildcards):
    """What the feature-accuracy job reads: the LoRA's loading, the variants,
    generation and grading as evaluation does them, the backtracking words."""
    keys = ["ablation.seed", "ablation.device", "data.system_prompt"]
    causal = ("accuracy_top_n", "accuracy_limit", "accuracy_max_new_tokens")
    keys += [f"causal.{k}" for k in causal]
    if config["causal"]["accuracy_max_new_tokens"] is None:
        keys += ["eval.max_new_tokens"]
    # The batch: causal.accuracy_batch_size, or (null) the most that fit the
    # card, or eval.batch_size off CUDA.
    keys += ["causal.accuracy_batch_size", "eval.batch_size"]
    keys += ["eval.grade_without_answer_marker", "eval.bootstrap_samples"]
    keys += ["steering.backtrack_words"]
    return config_of("seed", "device", *model_keys(), *keys)


def feature_ablation_params(wildcards):
    """The KL ablation's config (same sequences) and the feature subset size."""
    return config_of("seed", "device", *model_keys(), "ablation", "causal.kl_sequences")


def direct_effect_params(wildcards):
    """What the direct-effect job reads: the dtype its tensors pass through as
    a loaded model's would, and the revision they are read at (no device: a
    CPU job reading tensors, not a model)."""
    return config_of("model.revision", "model.dtype")


rule feature_ablation:
    input:
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        sae=res("sae/model"),
        sae_features=res("features/sae/features.parquet"),
        lora_features=res("features/lora/features.parquet"),
        kl_components=res("ablation/kl_components.parquet"),
        base=base_model_input,
    output:
        table=res("ablation/feature_kl.parquet"),
        md=res("ablation/feature_kl.md"),
        recovered=res("ablation/sae_recovered.json"),
    log:
        log_("causal/feature_ablation.log"),
    priority: rule_priority("feature_ablation")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("feature_ablation"),
    params:
        config=feature_ablation_params,
        base=base_model_path,
        user_files=user_files_of(base_model_input),
        code=code_of("causal_features.py"),
    script:
        "../scripts/causal_features.py"


rule direct_effects:
    input:
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        sae=res("sae/model"),
        sae_features=res("features/sae/features.parquet"),
        lora_features=res("features/lora/features.parquet"),
        base=base_model_input,
    output:
        effects=res("ablation/direct_effects.parquet"),
        fingerprint=res("ablation/sae_decoder.parquet"),
    log:
        log_("causal/direct_effects.log"),
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("direct_effects"),
    params:
        config=direct_effect_params,
        base=base_model_path,
        n_tokens=setting("causal.direct_tokens"),
        user_files=user_files_of(base_model_input),
        code=code_of("causal_direct.py"),
    script:
        "../scripts/causal_direct.py"


rule feature_accuracy:
    input:
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        sae=res("sae/model"),
        feature_kl=res("ablation/feature_kl.parquet"),
        kl_components=res("ablation/kl_components.parquet"),
        bench=res(f"data/bench/{feature_accuracy_benchmark()}.parquet"),
        base=base_model_input,
    output:
        table=res("ablation/feature_accuracy.parquet"),
        md=res("ablation/feature_accuracy.md"),
    log:
        log_("causal/feature_accuracy.log"),
    priority: rule_priority("feature_accuracy")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("feature_accuracy"),
    params:
        config=feature_accuracy_params,
        base=base_model_path,
        benchmark=feature_accuracy_benchmark(),
        user_files=user_files_of(base_model_input),
        code=code_of("causal_accuracy.py"),
    script:
        "../scripts/causal_accuracy.py"


final_targets(
    res("ablation/feature_kl.parquet"),
    res("ablation/sae_recovered.json"),
    res("ablation/direct_effects.parquet"),
    res("ablation/sae_decoder.parquet"),
    *feature_accuracy_targets(),
)
