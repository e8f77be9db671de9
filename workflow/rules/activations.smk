# Stage 'activations': per-token LoRA scalars of the SFT set in resumable
# shards (the manifest is the output: shards of a killed run are kept and
# reused, and nothing half-written looks finished), then per kind (lora, mlp)
# the feature table, streamed top-k and context windows.


def activations_targets():
    return [
        res(f"features/{kind}/{name}.parquet")
        for kind in ("lora", "mlp")
        for name in ("features", "topk", "contexts")
    ]


def extract_settings(wildcards=None):
    """activations config minus display-only keys: changing them keeps shards."""
    return {k: v for k, v in cfg("activations").items() if k != "context_width"}


def extraction_model(wildcards=None):
    """The model keys that change the measured values (not full_finetune)."""
    m = cfg("model")
    return {k: m.get(k) for k in ("base", "revision", "dtype", "attn_implementation")}


rule extract_activations:
    input:
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        base=base_model_input,
    output:
        manifest=res("activations/manifest.json"),
    params:
        act=extract_settings(),
        model=extraction_model(),
        base=base_model_path,
        device=config["device"],
    log:
        log_("activations/extract_activations.log"),
    script:
        "../scripts/activations_extract.py"


rule activation_features:
    wildcard_constraints:
        kind="lora|mlp",
    input:
        manifest=res("activations/manifest.json"),
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        base=base_model_input,
    output:
        features=res("features/{kind}/features.parquet"),
        topk=res("features/{kind}/topk.parquet"),
        contexts=res("features/{kind}/contexts.parquet"),
    params:
        act=cfg("activations"),
        model=extraction_model(),
        base=base_model_path,
        device=config["device"],
    log:
        log_("activations/activation_features_{kind}.log"),
    script:
        "../scripts/activations_features.py"
