# Stage 'groundtruth' (toy world only): every LoRA direction, MLP neuron and
# SAE feature scored against the role of each token (the toy generator's
# record on SFT traces, the world's parser on the LoRA's generations), one
# job. With non-toy data the rule's input function fails, naming why.

GROUNDTRUTH_ON = is_toy(config["data"]["dataset"])
GROUNDTRUTH_TABLES = ("scores", "matched", "summary", "tokens")


def groundtruth_inputs(wildcards):
    """What the ground-truth job reads; only the toy world has roles."""
    if not GROUNDTRUTH_ON:
        raise ValueError(
            "groundtruth/: ground truth needs the embedded toy world "
            f"(data.dataset: toy, not {config['data']['dataset']!r}): real "
            "data has no per-token roles"
        )
    out = {
        "sft": res("data/sft.parquet"),
        "manifest": res("activations/manifest.json"),
        "adapter": res("train/rank1/adapter"),
        "sae": res("sae/model"),
        **{f"features_{k}": res(f"features/{k}/features.parquet") for k in KINDS},
        **{
            f"explanations_{k}": res(f"autointerp/explanations/{k}.parquet")
            for k in KINDS
        },
    }
    if config["groundtruth"]["generations"]:
        for b in EVAL_BENCHMARKS:
            if is_toy_benchmark(b):
                out[f"gen_{b}"] = res(f"eval/rank1/{b}.parquet")
    base = base_model_input()
    if base:
        out["base"] = base
    return out


def groundtruth_params(wildcards=None):
    """The toy generator's keys (to rebuild its role record), the scored
    tokens, the model's loading and the batch size of the pass."""
    toy = ("seed", "n_sft", "sft_digits", "slip_rate", "carry_slip_rate")
    return config_of(
        "device",
        *model_keys(),
        *(f"toy.{k}" for k in toy),
        "groundtruth",
        "activations.batch_tokens",
    )


rule ground_truth:
    input:
        unpack(groundtruth_inputs),
    output:
        scores=res("groundtruth/scores.parquet"),
        matched=res("groundtruth/matched.parquet"),
        matched_md=res("groundtruth/matched.md"),
        summary=res("groundtruth/summary.parquet"),
        summary_md=res("groundtruth/summary.md"),
        tokens=res("groundtruth/tokens.parquet"),
    log:
        log_("groundtruth/ground_truth.log"),
    priority: rule_priority("ground_truth")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("ground_truth"),
    params:
        config=groundtruth_params,
        base=base_model_path,
        user_files=user_files_of(base_model_input),
        code=code_of("ground_truth.py"),
    script:
        "../scripts/ground_truth.py"


rule sae_architectures:
    input:
        manifest=res("activations/manifest.json"),
        tokens=res("groundtruth/tokens.parquet"),
    output:
        table=res("groundtruth/sae_architectures.parquet"),
        md=res("groundtruth/sae_architectures.md"),
    log:
        log_("groundtruth/sae_architectures.log"),
    priority: rule_priority("sae_architectures")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("sae_architectures"),
    params:
        config=config_of("seed", "device", "sae", "groundtruth"),
        code=code_of("sae_architectures.py"),
    script:
        "../scripts/sae_architectures.py"


if GROUNDTRUTH_ON:
    final_targets(
        res("groundtruth/scores.parquet"),
        res("groundtruth/matched.parquet"),
        res("groundtruth/summary.parquet"),
        *(
            [res("groundtruth/sae_architectures.parquet")]
            if config["groundtruth"]["sae_architectures"]
            else []
        ),
    )
