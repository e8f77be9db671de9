# Stage 'ablation': KL(full LoRA || ablated LoRA) per layer, component and group
# (paper §3.2, Fig 3), and a steering sweep on components / SAE features (the
# paper's open question in its limitations).

KL_TABLES = ["kl_layers", "kl_components", "kl_groups"]


rule kl_ablation:
    input:
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        base=base_model_input,
    output:
        **{t: res(f"ablation/{t}.parquet") for t in KL_TABLES},
        **{f"{t}_md": res(f"ablation/{t}.md") for t in KL_TABLES},
    log:
        log_("ablation/kl_ablation.log"),
    conda:
        "../../envs/train.yaml"
    params:
        config=ablation_params,
        base=base_model_path,
        code=code_of("ablation_kl.py"),
    script:
        "../scripts/ablation_kl.py"


rule steering_sweep:
    input:
        unpack(steering_sae_inputs),
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        kl_components=res("ablation/kl_components.parquet"),
        bench=res(f"data/bench/{steering_benchmark()}.parquet"),
        base=base_model_input,
    output:
        sweep=res("steering/sweep.parquet"),
        sweep_md=res("steering/sweep.md"),
    log:
        log_("ablation/steering_sweep.log"),
    conda:
        "../../envs/train.yaml"
    params:
        config=steering_params,
        base=base_model_path,
        code=code_of("steering_sweep.py"),
    script:
        "../scripts/steering_sweep.py"


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
        log_("ablation/feature_ablation.log"),
    conda:
        "../../envs/train.yaml"
    params:
        config=feature_ablation_params,
        base=base_model_path,
        code=code_of("ablation_features.py"),
    script:
        "../scripts/ablation_features.py"


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
        log_("ablation/direct_effects.log"),
    conda:
        "../../envs/train.yaml"
    params:
        config=direct_effect_params,
        base=base_model_path,
        n_tokens=setting("causal.direct_tokens"),
        code=code_of("ablation_direct.py"),
    script:
        "../scripts/ablation_direct.py"


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
        log_("ablation/feature_accuracy.log"),
    conda:
        "../../envs/train.yaml"
    params:
        config=feature_accuracy_params,
        base=base_model_path,
        benchmark=feature_accuracy_benchmark(),
        code=code_of("ablation_accuracy.py"),
    script:
        "../scripts/ablation_accuracy.py"
