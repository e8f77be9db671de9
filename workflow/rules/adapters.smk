# Stage 'adapters': derived rank-1 adapters with a component group ablated
# (lora_B zeroed, same PEFT format) for Table 2.

ABLATED_VARIANTS = ["rank1-attn-ablated", "rank1-mlp-ablated"]


def ablated_group(wildcards):
    """The component group a derived variant removes."""
    return {"rank1-attn-ablated": "attn", "rank1-mlp-ablated": "mlp"}[wildcards.variant]


rule adapters_ablate:
    input:
        adapter=res("train/rank1/adapter"),
    output:
        adapter=directory(res("adapters/{variant}")),
    log:
        log_("adapters/adapters_ablate_{variant}.log"),
    wildcard_constraints:
        variant="|".join(ABLATED_VARIANTS),
    params:
        group=ablated_group,
    script:
        "../scripts/adapters_ablate.py"
