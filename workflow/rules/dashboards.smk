# Stage 'dashboards': static, offline feature dashboards (paper App. A), one
# page per feature of every kind, as a report() output. Its code param hashes
# its package files and assets, so a template edit rebuilds only the dashboards.


rule dashboards:
    input:
        unpack(dashboard_inputs),
        usage=res("autointerp/usage.json"),
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
    params:
        options=cfg("figures.dashboards"),
        code=code_of("dashboards.py"),
    script:
        "../scripts/dashboards.py"
