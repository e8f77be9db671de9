# Stage 'adapters': derived rank-1 adapters with a component group ablated
# (lora_B zeroed, same PEFT format) for Table 2.


def ablated_group(wildcards):
    """The component group a derived variant removes."""
    return ABLATED_GROUP[wildcards.variant]


rule adapters_ablate:
    input:
        adapter=mres("train/rank1/adapter"),
    output:
        adapter=directory(mres("adapters/{variant}")),
    log:
        mlog("adapters/adapters_ablate_{variant}.log"),
    wildcard_constraints:
        variant="|".join(ABLATED_GROUP),
    priority: rule_priority("adapters_ablate")
    conda:
        "../../envs/train.yaml"
    resources:
        **resources_for("adapters_ablate"),
    params:
        group=ablated_group,
        code=code_of("adapters_ablate.py"),
    script:
        "../scripts/adapters_ablate.py"
