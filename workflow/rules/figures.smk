# Stage 'figures': paper figures (PNG + PDF), Tables 1/2 as images and the
# steering plot, all as report() outputs, from one table: a figure is a row
# (the rule that draws it, what it reads, the config it reads, its report
# category), a plotting module `lorascope.figures.<plotter>` with a
# `draw(data, options, style)` function, and a caption
# workflow/report/<name>.rst. Each rule records only its own figure's options
# and the hashes of its plotting code, so a style, option or plotting change
# reruns that figure and nothing upstream.


def figure(
    plotter, inputs, options=(), category="Figures", tables=(), rule_name=None, fixed=()
):
    """One row of the figure table. `inputs`: name -> path under the run dir;
    `options`: name -> dotted config key (its value is handed to `draw`);
    `fixed`: name -> a value of the row itself (which table it draws);
    `tables`: names of tables `draw` returns, written beside the figure."""
    return dict(
        plotter=plotter,
        inputs=inputs,
        options=dict(options),
        fixed=dict(fixed),
        category=category,
        tables=tables,
        rule_name=rule_name or f"figure_{plotter}",
    )


USAGE = {"usage": "autointerp/usage.json"}
FIGURES = {
    "fig1_classes": figure(
        "classes",
        {"classes": "autointerp/summary/classes.parquet", **USAGE},
        {"kinds": "figures.classes.kinds"},
    ),
    "fig1_scores": figure(
        "scores",
        {"scores": "autointerp/summary/scores.parquet", **USAGE},
        {"kinds": "figures.classes.kinds"},
    ),
    "fig1_categories": figure(
        "categories",
        {
            "shares": "autointerp/summary/category_shares.parquet",
            "categories": "autointerp/categories.json",
            **USAGE,
        },
    ),
    "fig2_sae_density": figure(
        "sae_density",
        {
            "density": "autointerp/summary/sae_category_density.parquet",
            "categories": "autointerp/categories.json",
            **USAGE,
        },
        {"sae_density": "figures.sae_density"},
    ),
    "fig3_ablation": figure(
        "ablation",
        {
            "layers": "ablation/kl_layers.parquet",
            "components": "ablation/kl_components.parquet",
        },
        {"ablation": "figures.ablation"},
    ),
    "steering_sweep": figure(
        "steering",
        {"sweep": "steering/sweep.parquet"},
        {"steering": "figures.steering"},
    ),
    "fig_causal": figure(
        "causal",
        {
            **{
                f"{part}_{kind}": f"autointerp/{part}/{kind}.parquet"
                for part in ("explanations", "scores")
                for kind in ("lora", "sae")
            },
            "feature_kl": "ablation/feature_kl.parquet",
            **USAGE,
        },
        {"bootstrap_samples": "causal.bootstrap_samples", "seed": "seed"},
        tables=("stats",),
    ),
    "fig_diffing": figure(
        "diffing",
        {t: f"diffing/{t}.parquet" for t in ("residual", "kl_layers", "table3")},
    ),
    "fig_attribution": figure(
        "attribution",
        {
            "exact": "attribution/exact.parquet",
            "validation": "attribution/validation.parquet",
        },
    ),
    **(
        {
            "fig_behaviour_sets": figure(
                "behaviour_sets", {"sets": "attribution/sets.parquet"}
            )
        }
        if config["attribution"]["set_targets"]
        else {}
    ),
    **{
        table: figure(
            "table_image",
            {"table": f"tables/{table}.parquet"},
            {"columns": f"figures.tables.{table}", "ci": "eval.ci"},
            category="Tables",
            rule_name=f"figure_{table}",
            fixed={"table": table},
        )
        for table in ("table1", "table2")
    },
    # a sweep only (sweeps.smk)
    **(
        {
            "fig_recovery_rank": figure(
                "recovery_rank", {"recovery": "sweep/recovery.parquet"}
            )
        }
        if SWEEP_ON
        else {}
    ),
    **(
        {"fig_emergence": figure("emergence", {"curve": "sweep/emergence.parquet"})}
        if SWEEP_ON and config["sweep"]["checkpoints"]
        else {}
    ),
    # toy world only (groundtruth.smk): real data has no per-token roles
    **(
        {
            "fig_groundtruth": figure(
                "groundtruth",
                {"matched": "groundtruth/matched.parquet", **USAGE},
            )
        }
        if GROUNDTRUTH_ON
        else {}
    ),
}


def figure_style(wildcards=None):
    return cfg("figures", "width_in", "font_size", "dpi")


def figure_options(spec):
    """What a figure's `draw` reads, by the names it uses: config values and
    the row's own fixed values."""
    return {key: setting(path) for key, path in spec["options"].items()} | spec["fixed"]


for name, spec in FIGURES.items():

    rule:
        name:
            spec["rule_name"]
        input:
            **{key: res(path) for key, path in spec["inputs"].items()},
        output:
            **{t: res(f"figures/{name}.parquet") for t in spec["tables"]},
            **{f"{t}_md": res(f"figures/{name}.md") for t in spec["tables"]},
            png=report(
                res(f"figures/{name}.png"),
                caption=f"../report/{name}.rst",
                category=spec["category"],
            ),
            pdf=res(f"figures/{name}.pdf"),
        log:
            log_(f"figures/{spec['rule_name']}.log"),
        conda:
            "../../envs/interp.yaml"
        resources:
            **resources_for(spec["rule_name"]),
        params:
            plotter=spec["plotter"],
            style=figure_style,
            options=figure_options(spec),
            code=[code_of("figure.py"), code_of(f"lorascope.figures.{spec['plotter']}")],
        script:
            "../scripts/figure.py"


final_targets(*expand(res("figures/{name}.{ext}"), name=FIGURES, ext=["png", "pdf"]))
