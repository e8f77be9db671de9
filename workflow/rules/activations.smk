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


# Two rules, one script: the LoRA tables read the stored scalars (a CPU job),
# the MLP baseline's context windows are recomputed with the model (a GPU job
# at paper scale), so the profiles can give each what it uses.


rule lora_features:
    input:
        manifest=res("activations/manifest.json"),
        sft=res("data/sft.parquet"),
        components=res("components.parquet"),
        base=base_model_input,
    output:
        features=res("features/lora/features.parquet"),
        topk=res("features/lora/topk.parquet"),
        contexts=res("features/lora/contexts.parquet"),
    log:
        log_("activations/lora_features.log"),
    conda:
        "../../envs/train.yaml"
    params:
        kind="lora",
        act=cfg("activations"),
        model=extraction_model(),
        base=base_model_path,
        device=setting("device"),
        code=code_of("activations_features.py"),
    script:
        "../scripts/activations_features.py"


rule mlp_features:
    input:
        manifest=res("activations/manifest.json"),
        sft=res("data/sft.parquet"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        base=base_model_input,
    output:
        features=res("features/mlp/features.parquet"),
        topk=res("features/mlp/topk.parquet"),
        contexts=res("features/mlp/contexts.parquet"),
    log:
        log_("activations/mlp_features.log"),
    conda:
        "../../envs/train.yaml"
    params:
        kind="mlp",
        act=cfg("activations"),
        model=extraction_model(),
        base=base_model_path,
        device=setting("device"),
        code=code_of("activations_features.py"),
    script:
        "../scripts/activations_features.py"
