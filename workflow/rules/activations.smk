# Stage 'activations': per-token LoRA scalars of the SFT set in resumable
# shards (the manifest is the output: shards of a killed run are kept and
# reused, and nothing half-written looks finished), then per kind (lora, mlp)
# the feature table, streamed top-k and context windows.


rule extract_activations:
    input:
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        base=base_model_input,
    output:
        manifest=res("activations/manifest.json"),
    log:
        log_("activations/extract_activations.log"),
    conda:
        "../../envs/train.yaml"
    params:
        act=extract_settings(),
        model=extraction_model(),
        base=base_model_path,
        device=setting("device"),
        code=code_of("activations_extract.py"),
    script:
        "../scripts/activations_extract.py"


rule activation_features:
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
    log:
        log_("activations/activation_features_{kind}.log"),
    wildcard_constraints:
        kind="lora|mlp",
    conda:
        "../../envs/train.yaml"
    params:
        act=cfg("activations"),
        model=extraction_model(),
        base=base_model_path,
        device=setting("device"),
        code=code_of("activations_features.py"),
    script:
        "../scripts/activations_features.py"
