# Stage 'steering': a sweep that pushes components / SAE features and measures
# KL, backtracking and accuracy (the paper's open question in its limitations).


def steering_params(wildcards):
    """The config the steering sweep reads; eval's generation budget and
    batch only where steering leaves its own null."""
    st = config["steering"]
    ablation = ["seed", "device", "n_sequences", "max_tokens", "token_scope"]
    ablation += ["draw_rng", "average", "logit_chunk"]
    keys = [*model_keys(), "data.system_prompt", "steering"]
    keys += [f"ablation.{k}" for k in ablation]
    keys += ["eval.grade_without_answer_marker"]
    if len(st["models"]) > 1:  # the transfer summary's intervals
        keys += ["eval.bootstrap_samples"]
    keys += [f"eval.{k}" for k in ("max_new_tokens", "batch_size") if st[k] is None]
    return config_of("seed", "device", *keys)


def steering_benchmark():
    return config["steering"]["benchmark"] or EVAL_BENCHMARKS[0]


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
    if auto_sae and st["sae_select"] != "keyword":
        inputs["feature_kl"] = res("ablation/feature_kl.parquet")
    return inputs


def steering_full_inputs(wildcards):
    """The full fine-tune, only when it is one of steering.models."""
    if "full" not in config["steering"]["models"]:
        return {}
    return {"full": res("train/full/model"), "full_local": full_local()}


def steering_full_local(wildcards):
    return full_local() if "full" in config["steering"]["models"] else []


rule steering_sweep:
    input:
        unpack(steering_sae_inputs),
        unpack(steering_full_inputs),
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
        log_("steering/steering_sweep.log"),
    priority: rule_priority("steering_sweep")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("steering_sweep"),
    params:
        config=steering_params,
        base=base_model_path,
        user_files=user_files_of(base_model_input, steering_full_local),
        code=code_of("steering_sweep.py"),
    script:
        "../scripts/steering_sweep.py"


final_targets(res("steering/sweep.parquet"))
