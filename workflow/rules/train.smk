# Stage 'train': the rank-1 LoRA and the full fine-tune baseline (paper §2),
# plus the component table every later stage indexes by.


rule train_rank1:
    input:
        sft=res("data/sft.parquet"),
        base=base_model_input,
    output:
        adapter=directory(res("train/rank1/adapter")),
    log:
        log_("train/train_rank1.log"),
    conda:
        "../../envs/train.yaml"
    params:
        base=base_model_path,
        out=output_parent,
        config=train_settings("rank1"),
        launcher=launcher,
        code=code_of("lorascope.train"),
    shell:
        "{params.launcher} -m lorascope.train --variant rank1 --base {params.base:q}"
        " --sft {input.sft:q} --out {params.out:q}"
        " --config {params.config.as_json:q}"
        " > {log:q} 2>&1"


if config["model"]["full_finetune"] == "train":

    rule train_full:
        input:
            sft=res("data/sft.parquet"),
            base=base_model_input,
        output:
            model=directory(res("train/full/model")),
        log:
            log_("train/train_full.log"),
        conda:
            "../../envs/train.yaml"
        params:
            base=base_model_path,
            out=output_parent,
            config=train_settings("full"),
            launcher=launcher,
            code=code_of("lorascope.train"),
        shell:
            "{params.launcher} -m lorascope.train --variant full --base {params.base:q}"
            " --sft {input.sft:q} --out {params.out:q}"
            " --config {params.config.as_json:q}"
            " > {log:q} 2>&1"

else:

    rule full_checkpoint:
        output:
            model=directory(res("train/full/model")),
        log:
            log_("train/full_checkpoint.log"),
        conda:
            "../../envs/train.yaml"
        params:
            model=cfg("model", "full_finetune", "full_finetune_revision"),
            code=code_of("train_full_checkpoint.py"),
        script:
            "../scripts/train_full_checkpoint.py"


rule components:
    input:
        adapter=res("train/rank1/adapter"),
    output:
        table=res("components.parquet"),
    log:
        log_("train/components.log"),
    conda:
        "../../envs/train.yaml"
    params:
        lora=cfg("train.lora"),
        code=code_of("train_components.py"),
    script:
        "../scripts/train_components.py"
