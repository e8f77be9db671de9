# Stage 'toy': the embedded stand-in world (base model, SFT set, benchmarks).
# Only scheduled when model.base, data.dataset or a benchmark is 'toy'.


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


rule toy_sft:
    output:
        sft=res("toy/s1k.parquet"),
    log:
        log_("toy/toy_sft.log"),
    conda:
        "../../envs/train.yaml"
    params:
        toy=cfg("toy", "seed", "n_sft", "sft_digits", "slip_rate", "carry_slip_rate"),
        code=code_of("toy_sft.py"),
    script:
        "../scripts/toy_sft.py"


rule toy_bench:
    output:
        bench=res("toy/bench/{name}.parquet"),
    log:
        log_("toy/toy_bench_{name}.log"),
    conda:
        "../../envs/train.yaml"
    params:
        toy=toy_bench_config,
        code=code_of("toy_bench.py"),
    script:
        "../scripts/toy_bench.py"
