# Stage 'activations': per-token LoRA scalars of the SFT set in resumable
# shards (the manifest is the output: shards of a killed run are kept and
# reused, and nothing half-written looks finished), then per kind (lora, mlp)
# the feature table, streamed top-k and context windows.

# activations keys read only when the feature tables are built: changing
# them keeps the shards (the streamed top-k state does not depend on them).
FEATURE_TABLE_KEYS = (
    "context_width",
    "min_activation",
    "min_contexts",
    "lora_modules",
    "population_note",
)


def extract_settings(wildcards=None):
    """activations config minus feature-table keys: changing them keeps shards."""
    return cfg("activations", exclude=FEATURE_TABLE_KEYS)


def extraction_model(wildcards=None):
    """The model keys that change the measured values (not full_finetune)."""
    return cfg("model", "revision", "dtype", "attn_implementation")


rule extract_activations:
    input:
        sft=res("data/sft.parquet"),
        adapter=mres("train/rank1/adapter"),
        components=mres("components.parquet"),
        base=base_model_input,
    output:
        manifest=mres("activations/manifest.json"),
    log:
        mlog("activations/extract_activations.log"),
    priority: rule_priority("extract_activations")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("extract_activations"),
    params:
        act=extract_settings(),
        model=extraction_model(),
        base=base_model_path,
        device=setting("device"),
        user_files=user_files_of(base_model_input),
        code=code_of("activations_extract.py"),
    script:
        "../scripts/activations_extract.py"


FEATURE_FILES = ("features", "topk", "contexts")


def feature_tables(kind):
    """A kind's feature tables (features, top-k, contexts) of a sweep member."""
    return {t: mres(f"features/{kind}/{t}.parquet") for t in FEATURE_FILES}


# Two rules, one script: the LoRA tables read the stored scalars (a CPU job),
# the MLP baseline's context windows are recomputed with the model (a GPU job
# at paper scale), so the profiles can give each what it uses.


rule lora_features:
    input:
        manifest=mres("activations/manifest.json"),
        sft=res("data/sft.parquet"),
        components=mres("components.parquet"),
        base=base_model_input,
    output:
        **feature_tables("lora"),
    log:
        mlog("activations/lora_features.log"),
    priority: rule_priority("lora_features")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("lora_features"),
    params:
        kind="lora",
        act=cfg("activations"),
        model=extraction_model(),
        base=base_model_path,
        device=setting("device"),
        user_files=user_files_of(base_model_input),
        code=code_of("activations_features.py"),
    script:
        "../scripts/activations_features.py"


use rule lora_features as mlp_features with:
    input:
        manifest=mres("activations/manifest.json"),
        sft=res("data/sft.parquet"),
        adapter=mres("train/rank1/adapter"),
        components=mres("components.parquet"),
        base=base_model_input,
    output:
        **feature_tables("mlp"),
    log:
        mlog("activations/mlp_features.log"),
    resources:
        **resources_for("mlp_features"),
    params:
        kind="mlp",


final_targets(
    *member_targets(
        *(
            f"features/{kind}/{t}.parquet"
            for kind in ("lora", "mlp")
            for t in FEATURE_FILES
        )
    )
)
