# Stage 'hub': snapshots of the hub repos a run needs (hub.prefetch), fetched
# on a CPU job with network access, so that GPU jobs on compute nodes without
# internet read local paths. One job per repo; HF_TOKEN is needed only here.
# Snapshots are keyed by endpoint (HUB_ROOT), repo and revision; SNAPSHOT.json
# in each records the commit a revision resolved to and the endpoint.


def gated_repos():
    """Hub repos that need HF_TOKEN (GPQA): only hub_fetch reads the token."""
    from lorascope.evaluation.benchmarks import BENCHMARKS as REGISTRY

    return sorted(spec.hub_id for spec in REGISTRY.values() if spec.gated)


def hub_endpoint(wildcards, output):
    """The endpoint HUB_ROOT is keyed by (hub.endpoint, else HF_ENDPOINT, else
    huggingface.co). Derived from the output, so not recorded: the output's
    path already says which endpoint, and a URL's credentials stay out of
    .snakemake/metadata."""
    from lorascope.hub.names import endpoint_url

    return endpoint_url(config["hub"]["endpoint"])


rule hub_fetch:
    output:
        snapshot=directory(f"{HUB_ROOT}/{{kind}}/{{snapshot}}"),
    log:
        f"logs/{HUB_ROOT}/{{kind}}/{{snapshot}}.log",
    wildcard_constraints:
        kind="model|dataset",
        snapshot=r"[^/]+--[^/]+@[^/]+",
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("hub_fetch"),
    params:
        endpoint=hub_endpoint,
        gated=gated_repos(),
        code=code_of("hub_fetch.py"),
    script:
        "../scripts/hub_fetch.py"
