# Stage 'dashboards': static, offline feature dashboards (paper App. A), one
# page per feature of every kind, as a report() output. The rule depends on
# its own package files, so a template edit rebuilds only the dashboards.


rule dashboards:
    input:
        unpack(dashboard_inputs),
        usage=res("autointerp/usage.json"),
        code=figure_code(
            "dashboards/build.py",
            "dashboards/assets/index.html.jinja",
            "dashboards/assets/feature.html.jinja",
            "dashboards/assets/dashboard.css",
            "dashboards/assets/dashboard.js",
        ),
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
        options=config["figures"]["dashboards"],
    script:
        "../scripts/dashboards.py"
