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
