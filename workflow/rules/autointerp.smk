# Stage 'autointerp' (paper §3.1, App. B): an explanation and monosemanticity
# class per LoRA direction, MLP neuron and SAE feature; categories proposed from
# equal LoRA/MLP samples; one category per feature; detection scores; summaries.
# LLM replies are cached in autointerp.cache, so reruns never pay twice.


AUTOINTERP_SUMMARIES = ["classes", "category_shares", "sae_category_density"]


rule autointerp_explain:
    input:
        features=res("features/{kind}/features.parquet"),
        contexts=res("features/{kind}/contexts.parquet"),
        prompts=autointerp_prompts("explain"),
    output:
        explanations=res("autointerp/explanations/{kind}.parquet"),
        usage=res("autointerp/usage/explain_{kind}.parquet"),
    log:
        log_("autointerp/explain_{kind}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        ai=autointerp_params("explain"),
        code=code_of("autointerp_explain.py"),
    script:
        "../scripts/autointerp_explain.py"


rule autointerp_categories:
    input:
        explanations=expand(res("autointerp/explanations/{kind}.parquet"), kind=KINDS),
        prompts=autointerp_prompts("categories"),
    output:
        categories=res("autointerp/categories.json"),
        usage=res("autointerp/usage/categories.parquet"),
    log:
        log_("autointerp/categories.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        ai=autointerp_params("categories"),
        code=code_of("autointerp_categories.py"),
        kinds=KINDS,
    script:
        "../scripts/autointerp_categories.py"


rule autointerp_assign:
    input:
        categories=res("autointerp/categories.json"),
        explanations=res("autointerp/explanations/{kind}.parquet"),
        contexts=res("features/{kind}/contexts.parquet"),
        prompts=autointerp_prompts("assign"),
    output:
        assignments=res("autointerp/assignments/{kind}.parquet"),
        usage=res("autointerp/usage/assign_{kind}.parquet"),
    log:
        log_("autointerp/assign_{kind}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        ai=autointerp_params("assign"),
        code=code_of("autointerp_assign.py"),
    script:
        "../scripts/autointerp_assign.py"


rule autointerp_score:
    input:
        explanations=res("autointerp/explanations/{kind}.parquet"),
        contexts=res("features/{kind}/contexts.parquet"),
        prompts=autointerp_prompts("score"),
    output:
        scores=res("autointerp/scores/{kind}.parquet"),
        usage=res("autointerp/usage/score_{kind}.parquet"),
    log:
        log_("autointerp/score_{kind}.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        ai=autointerp_params("score"),
        code=code_of("autointerp_score.py"),
    script:
        "../scripts/autointerp_score.py"


rule autointerp_summary:
    input:
        explanations=expand(res("autointerp/explanations/{kind}.parquet"), kind=KINDS),
        assignments=expand(res("autointerp/assignments/{kind}.parquet"), kind=KINDS),
        scores=expand(res("autointerp/scores/{kind}.parquet"), kind=KINDS),
        sae_features=res("features/sae/features.parquet"),
        categories=res("autointerp/categories.json"),
        usage=expand(
            res("autointerp/usage/{step}_{kind}.parquet"),
            step=["explain", "assign", "score"],
            kind=KINDS,
        ),
        usage_categories=res("autointerp/usage/categories.parquet"),
    output:
        summaries=expand(
            res("autointerp/summary/{name}.parquet"), name=AUTOINTERP_SUMMARIES
        ),
        usage=res("autointerp/usage.json"),
    log:
        log_("autointerp/summary.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        ai=autointerp_params("summary"),
        code=code_of("autointerp_summary.py"),
        kinds=KINDS,
    script:
        "../scripts/autointerp_summary.py"
