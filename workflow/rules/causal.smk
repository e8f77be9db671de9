# Stage 'causal': what single SAE features and LoRA directions do: KL of
# removing each (feature_ablation), the tokens each promotes (direct_effects),
# and accuracy with the strongest removed during generation (feature_accuracy).


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
    log:
        log_("causal/feature_ablation.log"),
    conda:
        "../../envs/train.yaml"
    params:
        config=feature_ablation_params,
        base=base_model_path,
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
    params:
        config=direct_effect_params,
        base=base_model_path,
        n_tokens=setting("causal.direct_tokens"),
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
    conda:
        "../../envs/train.yaml"
    params:
        config=feature_accuracy_params,
        base=base_model_path,
        benchmark=feature_accuracy_benchmark(),
        code=code_of("causal_accuracy.py"),
    script:
        "../scripts/causal_accuracy.py"
