# Stage 'sae': a cross-layer BatchTopK SAE on every token's full vector of LoRA
# scalars (paper §3.1), and its alive latents as features in the same tables
# as the LoRA and MLP features.


def sae_params(wildcards):
    """The `sae:` section plus the top-level seed/device it inherits when null."""
    return config_of("seed", "device", "sae")


SAE_TABLES = ["features", "topk", "contexts"]


rule train_sae:
    input:
        manifest=mres("activations/manifest.json"),
    output:
        model=directory(mres("sae/model")),
        metrics=mres("sae/metrics.json"),
    log:
        mlog("sae/train_sae.log"),
    priority: rule_priority("train_sae")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("train_sae"),
    params:
        config=sae_params,
        provenance=output_parent,
        code=code_of("sae_train.py"),
    script:
        "../scripts/sae_train.py"


rule sae_features:
    input:
        manifest=mres("activations/manifest.json"),
        model=mres("sae/model"),
        metrics=mres("sae/metrics.json"),
        sft=res("data/sft.parquet"),
        base=base_model_input,
    output:
        **{table: mres(f"features/sae/{table}.parquet") for table in SAE_TABLES},
    log:
        mlog("sae/sae_features.log"),
    priority: rule_priority("sae_features")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("sae_features"),
    params:
        config=sae_params,
        activations=cfg("activations", "top_k", "sample_k", *FEATURE_TABLE_KEYS),
        model=cfg("model", "revision"),
        base=base_model_path,
        user_files=user_files_of(base_model_input),
        code=code_of("sae_features.py"),
    script:
        "../scripts/sae_features.py"


final_targets(
    *member_targets(
        "sae/metrics.json", *(f"features/sae/{table}.parquet" for table in SAE_TABLES)
    )
)
