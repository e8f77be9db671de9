# Stage 'data': the tokenised SFT set in the s1 chat format (paper §2).


rule sft_dataset:
    input:
        base=base_model_input,
        toy=toy_sft_input,
        files=sft_data_files,
    output:
        sft=res("data/sft.parquet"),
        stats=res("data/sft_stats.json"),
    log:
        log_("data/sft_dataset.log"),
    conda:
        "../../envs/train.yaml"
    params:
        data=cfg("data"),
        model=cfg("model", "revision"),
        base=base_model_path,
        code=code_of("data_sft.py"),
    script:
        "../scripts/data_sft.py"
