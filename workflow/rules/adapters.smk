# Stage 'adapters': derived rank-1 adapters with a component group ablated
# (lora_B zeroed, same PEFT format) for Table 2.

ABLATED_VARIANTS = ["rank1-attn-ablated", "rank1-mlp-ablated"]


rule adapters_ablate:
    input:
        adapter=res("train/rank1/adapter"),
    output:
        adapter=directory(res("adapters/{variant}")),
    log:
        log_("adapters/adapters_ablate_{variant}.log"),
    wildcard_constraints:
        variant="|".join(ABLATED_VARIANTS),
    conda:
        "../../envs/train.yaml"
    params:
        group=ablated_group,
        code=code_of("adapters_ablate.py"),
    script:
        "../scripts/adapters_ablate.py"
