# Stage 'hub': snapshots of the hub repos a run needs (hub.prefetch), fetched
# on a CPU job with network access, so that GPU jobs on compute nodes without
# internet read local paths. One job per repo; HF_TOKEN is needed only here.


def gated_repos():
    """Hub repos that need HF_TOKEN (GPQA): only hub_fetch reads the token."""
    from lorascope.evaluation.benchmarks import BENCHMARKS as REGISTRY

    return sorted(spec.hub_id for spec in REGISTRY.values() if spec.gated)


rule hub_fetch:
    output:
        snapshot=directory(f"{HUB_DIR}/{{kind}}/{{snapshot}}"),
    log:
        "logs/hub/{kind}/{snapshot}.log",
    wildcard_constraints:
        kind="model|dataset",
        snapshot=r"[^/]+--[^/]+@[^/]+",
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("hub_fetch"),
    params:
        endpoint=setting("hub.endpoint"),
        gated=gated_repos(),
        code=code_of("hub_fetch.py"),
    script:
        "../scripts/hub_fetch.py"
