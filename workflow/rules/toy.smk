# Stage 'toy': the embedded stand-in world (base model, SFT set, benchmarks).
# Only scheduled when model.base, data.dataset or a benchmark is 'toy'.

TOY_BENCHMARKS = list(config["toy"]["benchmarks"])


def toy_shipped_model(wildcards):
    """The shipped weights are an input only when they are copied, not rebuilt."""
    return [] if config["toy"]["rebuild"] else "resources/toy/base_model"


rule toy_base_model:
    input:
        shipped=toy_shipped_model,
    output:
        model=directory(res("toy/base_model")),
    log:
        log_("toy/toy_base_model.log"),
    params:
        toy=cfg("toy"),
    script:
        "../scripts/toy_base_model.py"


rule toy_data:
    output:
        sft=res("toy/s1k.parquet"),
        bench=expand(res("toy/bench/{name}.parquet"), name=TOY_BENCHMARKS),
    log:
        log_("toy/toy_data.log"),
    params:
        toy=cfg("toy"),
        names=TOY_BENCHMARKS,
    script:
        "../scripts/toy_data.py"
