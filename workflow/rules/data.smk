# Stage 'data': the tokenised SFT set in the s1 chat format (paper §2).


def toy_sft_input(wildcards):
    return [res("toy/s1k.parquet")] if is_toy(config["data"]["dataset"]) else []


def sft_snapshot(wildcards):
    """The SFT dataset's local snapshot, with hub.prefetch."""
    data = config["data"]
    snapshot = prefetched("dataset", data["dataset"], data["revision"])
    return [snapshot] if snapshot else []


def sft_data_files(wildcards):
    """Local SFT files (data.data_files) are inputs: an edit reruns the set."""
    files = config["data"]["data_files"]
    if config["data"]["dataset"] not in ("parquet", "json", "csv") or not files:
        return []
    return [files] if isinstance(files, str) else list(files)


rule sft_dataset:
    input:
        base=base_model_input,
        toy=toy_sft_input,
        files=sft_data_files,
        snapshot=sft_snapshot,
    output:
        sft=res("data/sft.parquet"),
        stats=res("data/sft_stats.json"),
    log:
        log_("data/sft_dataset.log"),
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("sft_dataset"),
    params:
        data=cfg("data"),
        model=cfg("model", "revision"),
        base=base_model_path,
        user_files=user_files_of(base_model_input, sft_data_files),
        code=code_of("data_sft.py"),
    script:
        "../scripts/data_sft.py"
