# Stage 'ablation': KL(full LoRA || ablated LoRA) per layer, component and group
# (paper §3.2, Fig 3), and a steering sweep on components / SAE features (the
# paper's open question in its limitations).

KL_TABLES = ["kl_layers", "kl_components", "kl_groups"]


def ablation_targets():
    return [
        *expand(res("ablation/{table}.parquet"), table=KL_TABLES),
        res("steering/sweep.parquet"),
    ]


def ablation_params(wildcards):
    """The config sections the KL ablation reads (a change reruns it)."""
    return {k: config[k] for k in ("seed", "device", "model", "ablation")}


def steering_params(wildcards):
    """The config sections the steering sweep reads."""
    keys = ("seed", "device", "model", "data", "eval", "ablation", "steering")
    return {k: config[k] for k in keys}


def steering_benchmark():
    return config["steering"]["benchmark"] or config["eval"]["benchmarks"][0]


def steering_sae_inputs(wildcards):
    """SAE model and explanations, only when the sweep can pick SAE features."""
    st = config["steering"]
    explicit = bool(st["components"] or st["sae_latents"])
    auto_sae = not explicit and st["max_sae_features"] > 0
    inputs = {}
    if st["sae_latents"] or auto_sae:
        inputs["sae"] = res("sae/model")
    if auto_sae:
        inputs["sae_features"] = res("features/sae/features.parquet")
        inputs["explanations"] = res("autointerp/explanations/sae.parquet")
    return inputs


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
    params:
        config=ablation_params,
        base=base_model_path,
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
    params:
        config=steering_params,
        base=base_model_path,
    script:
        "../scripts/steering_sweep.py"
