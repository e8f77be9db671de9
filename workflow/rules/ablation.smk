# Stage 'ablation': KL(full LoRA || ablated LoRA) per layer, component and group
# (paper §3.2, Fig 3).


def ablation_params(wildcards):
    """The config the KL ablation reads (a change reruns it)."""
    return config_of("seed", "device", *model_keys(), "ablation")


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
    resources:
        **resources_for("kl_ablation"),
    params:
        config=ablation_params,
        base=base_model_path,
        user_files=user_files_of(base_model_input),
        code=code_of("ablation_kl.py"),
    script:
        "../scripts/ablation_kl.py"


final_targets(*expand(res("ablation/{table}.parquet"), table=KL_TABLES))
