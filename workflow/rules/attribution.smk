# Stage 'attribution': every LoRA direction's and SAE feature's first-order
# effect on target metrics in one pass (feature_attribution, with its
# validation against exact removal).


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


rule feature_attribution:
    input:
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        sae=res("sae/model"),
        sae_features=res("features/sae/features.parquet"),
        lora_features=res("features/lora/features.parquet"),
        base=base_model_input,
    output:
        table=res("attribution/features.parquet"),
        md=res("attribution/features.md"),
        exact=res("attribution/exact.parquet"),
        validation=res("attribution/validation.parquet"),
        validation_md=res("attribution/validation.md"),
    log:
        log_("attribution/feature_attribution.log"),
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


final_targets(
    res("attribution/features.parquet"),
    res("attribution/validation.parquet"),
)
