# Stage 'toy': the embedded stand-in world (base model, SFT set, benchmarks).
# Only scheduled when model.base, data.dataset or a benchmark is 'toy'.

TOY_BENCHMARKS = list(config["toy"]["benchmarks"])


rule toy_base_model:
    output:
        model=directory(res("toy/base_model")),
    log:
        log_("toy/toy_base_model.log"),
    conda:
        "../../envs/train.yaml"
    params:
        toy=cfg("toy", *toy_model_keys()),
        code=code_of("toy_base_model.py", data=toy_shipped_files()),
    script:
        "../scripts/toy_base_model.py"


rule toy_data:
    output:
        sft=res("toy/s1k.parquet"),
        bench=expand(res("toy/bench/{name}.parquet"), name=TOY_BENCHMARKS),
    log:
        log_("toy/toy_data.log"),
    conda:
        "../../envs/train.yaml"
    params:
        toy=cfg("toy", "seed", "n_sft", "sft_digits", "slip_rate", "benchmarks"),
        names=TOY_BENCHMARKS,
        code=code_of("toy_data.py"),
    script:
        "../scripts/toy_data.py"
