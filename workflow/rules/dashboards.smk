# Stage 'dashboards': static, offline feature dashboards (paper App. A), one
# page per feature of every kind, as a report() output. Its code param hashes
# its package files and assets, so a template edit rebuilds only the dashboards.


def dashboard_inputs(wildcards):
    kinds = config["figures"]["dashboards"]["kinds"]
    extra = {"feature_accuracy": p for p in feature_accuracy_targets()}
    if config["attribution"]["set_targets"]:  # the default member's sets
        extra["sets"] = res("attribution/sets.parquet")
    if config["diffing"]["principal_directions"] > 0:  # the full fine-tune panel
        extra["feature_pcs"] = res("diffing/feature_pcs.parquet")
    return extra | {
        f"{part}_{kind}": res(path.format(kind=kind))
        for kind in kinds
        for part, path in (
            ("features", "features/{kind}/features.parquet"),
            ("contexts", "features/{kind}/contexts.parquet"),
            ("explanations", "autointerp/explanations/{kind}.parquet"),
            ("assignments", "autointerp/assignments/{kind}.parquet"),
            ("scores", "autointerp/scores/{kind}.parquet"),
        )
    }


rule dashboards:
    input:
        unpack(dashboard_inputs),
        usage=res("autointerp/usage.json"),
        feature_kl=res("ablation/feature_kl.parquet"),
        direct_effects=res("ablation/direct_effects.parquet"),
        fingerprint=res("ablation/sae_decoder.parquet"),
        attribution=res("attribution/features.parquet"),
    output:
        site=report(
            directory(res("dashboards")),
            htmlindex="index.html",
            caption="../report/dashboards.rst",
            category="Dashboards",
        ),
    log:
        log_("dashboards/dashboards.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("dashboards"),
    params:
        options=cfg("figures.dashboards"),
        code=code_of("dashboards.py"),
    script:
        "../scripts/dashboards.py"


rule sae_export:
    input:
        sae=res("sae/model"),
        adapter=res("train/rank1/adapter"),
        components=res("components.parquet"),
        features=res("features/sae/features.parquet"),
        contexts=res("features/sae/contexts.parquet"),
        explanations=res("autointerp/explanations/sae.parquet"),
        scores=res("autointerp/scores/sae.parquet"),
    output:
        sae=directory(res("export/sae")),
        features=res("export/features.json"),
    log:
        log_("dashboards/sae_export.log"),
    conda:
        "../../envs/interp.yaml"
    resources:
        **resources_for("sae_export"),
    params:
        config=config_of("model.base", "model.revision", "model.adapter"),
        code=code_of("sae_export.py"),
    script:
        "../scripts/sae_export.py"


final_targets(res("dashboards"), res("export/sae"), res("export/features.json"))
