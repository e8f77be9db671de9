# Stage 'ablation': KL(full LoRA || ablated LoRA) per layer, component and group
# (paper §3.2, Fig 3).


def ablation_params(wildcards):
    """The config the KL ablation reads (a change reruns it)."""
    return config_of("seed", "device", *model_keys(), "ablation")


KL_TABLES = ["kl_layers", "kl_components", "kl_groups"]


rule kl_ablation:
    input:
        sft=res("data/sft.parquet"),
        adapter=mres("train/rank1/adapter"),
        components=mres("components.parquet"),
        base=base_model_input,
    output:
        **{t: mres(f"ablation/{t}.parquet") for t in KL_TABLES},
        **{f"{t}_md": mres(f"ablation/{t}.md") for t in KL_TABLES},
    log:
        mlog("ablation/kl_ablation.log"),
    priority: rule_priority("kl_ablation")
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


final_targets(*member_targets(*(f"ablation/{table}.parquet" for table in KL_TABLES)))
