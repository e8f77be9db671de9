# Stage 'toy': the embedded stand-in world (base model, SFT set, benchmarks).
# Only scheduled when model.base, data.dataset or a benchmark is 'toy'.


def toy_model_keys():
    """Copying the shipped model reads only `rebuild`; pretraining reads more."""
    return ("rebuild", "seed", "pretrain") if config["toy"]["rebuild"] else ("rebuild",)


def toy_shipped_files():
    """The shipped weights (repo-relative), versioned by content when copied."""
    return [] if config["toy"]["rebuild"] else ["resources/toy/base_model"]


def toy_bench_config(wildcards):
    """toy.seed and this benchmark's own toy.benchmarks entry: adding or
    changing another benchmark reruns nothing of this one."""
    if wildcards.name not in config["toy"]["benchmarks"]:
        raise WorkflowError(
            f"toy benchmark {wildcards.name!r} is not in toy.benchmarks "
            f"(configured: {', '.join(config['toy']['benchmarks']) or 'none'})"
        )
    return config_of("toy.seed", f"toy.benchmarks.{wildcards.name}")["toy"]


# The base model is copied from resources/toy/base_model or, with
# toy.rebuild, pretrained from scratch: one script per path, so each one's code
# version covers only the code it runs (a grader edit does not touch a copy).
if config["toy"]["rebuild"]:

    rule toy_base_model:
        output:
            model=directory(res("toy/base_model")),
        log:
            log_("toy/toy_base_model.log"),
        conda:
            "../../envs/train.yaml"
        resources:
            **resources_for("toy_base_model"),
        params:
            toy=cfg("toy", *toy_model_keys()),
            code=code_of("toy_base_model.py"),
        script:
            "../scripts/toy_base_model.py"

else:

    rule toy_base_model:
        output:
            model=directory(res("toy/base_model")),
        log:
            log_("toy/toy_base_model.log"),
        conda:
            "../../envs/train.yaml"
        resources:
            **resources_for("toy_base_model"),
        params:
            toy=cfg("toy", *toy_model_keys()),
            code=code_of("toy_base_model_copy.py", data=toy_shipped_files()),
        script:
            "../scripts/toy_base_model_copy.py"


rule toy_sft:
    output:
        sft=res("toy/s1k.parquet"),
    log:
        log_("toy/toy_sft.log"),
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("toy_sft"),
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
    resources:
        **resources_for("toy_bench"),
    params:
        toy=toy_bench_config,
        code=code_of("toy_bench.py"),
    script:
        "../scripts/toy_bench.py"
