# Stage 'sae': a cross-layer BatchTopK SAE on every token's full vector of LoRA
# scalars (paper §3.1), and its alive latents as features in the same tables
# as the LoRA and MLP features.


def sae_targets():
    return [
        res("sae/metrics.json"),
        *expand(res("features/sae/{table}.parquet"), table=SAE_TABLES),
    ]


SAE_TABLES = ["features", "topk", "contexts"]


def sae_params(wildcards):
    """The `sae:` section plus the top-level seed/device it inherits when null."""
    return {"seed": config["seed"], "device": config["device"], "sae": cfg("sae")}


rule train_sae:
    input:
        manifest=res("activations/manifest.json"),
    output:
        model=directory(res("sae/model")),
        metrics=res("sae/metrics.json"),
    log:
        log_("sae/train_sae.log"),
    params:
        config=sae_params,
        provenance=res("sae"),
    script:
        "../scripts/sae_train.py"


rule sae_features:
    input:
        manifest=res("activations/manifest.json"),
        model=res("sae/model"),
        metrics=res("sae/metrics.json"),
        sft=res("data/sft.parquet"),
        base=base_model_input,
    output:
        **{table: res(f"features/sae/{table}.parquet") for table in SAE_TABLES},
    log:
        log_("sae/sae_features.log"),
    params:
        config=sae_params,
        activations=cfg("activations"),
        model=cfg("model"),
        base=base_model_path,
    script:
        "../scripts/sae_features.py"
