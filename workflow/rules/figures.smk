# Stage 'figures': paper figures (PNG + PDF), Tables 1/2 as images and the
# steering plot, all as report() outputs. Each rule takes only its own
# figure's params and the hashes of its plotting code (code_of), so a style,
# parameter or plotting change reruns that figure and nothing upstream.

FIGURES = {
    "fig1_classes": "Figures",
    "fig1_categories": "Figures",
    "fig2_sae_density": "Figures",
    "fig3_ablation": "Figures",
    "steering_sweep": "Figures",
    "table1": "Tables",
    "table2": "Tables",
}


rule figure_classes:
    input:
        classes=res("autointerp/summary/classes.parquet"),
        usage=res("autointerp/usage.json"),
    output:
        **figure_outputs("fig1_classes"),
    log:
        log_("figures/figure_classes.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_of("figure_classes.py"),
        style=figure_style,
        kinds=setting("figures.classes.kinds"),
    script:
        "../scripts/figure_classes.py"


rule figure_categories:
    input:
        shares=res("autointerp/summary/category_shares.parquet"),
        categories=res("autointerp/categories.json"),
        usage=res("autointerp/usage.json"),
    output:
        **figure_outputs("fig1_categories"),
    log:
        log_("figures/figure_categories.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_of("figure_categories.py"),
        style=figure_style,
    script:
        "../scripts/figure_categories.py"


rule figure_sae_density:
    input:
        density=res("autointerp/summary/sae_category_density.parquet"),
        categories=res("autointerp/categories.json"),
        usage=res("autointerp/usage.json"),
    output:
        **figure_outputs("fig2_sae_density"),
    log:
        log_("figures/figure_sae_density.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_of("figure_sae_density.py"),
        style=figure_style,
        options=cfg("figures.sae_density"),
    script:
        "../scripts/figure_sae_density.py"


rule figure_ablation:
    input:
        layers=res("ablation/kl_layers.parquet"),
        components=res("ablation/kl_components.parquet"),
    output:
        **figure_outputs("fig3_ablation"),
    log:
        log_("figures/figure_ablation.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_of("figure_ablation.py"),
        style=figure_style,
        options=cfg("figures.ablation"),
    script:
        "../scripts/figure_ablation.py"


rule figure_steering:
    input:
        sweep=res("steering/sweep.parquet"),
    output:
        **figure_outputs("steering_sweep"),
    log:
        log_("figures/figure_steering.log"),
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_of("figure_steering.py"),
        style=figure_style,
        options=cfg("figures.steering"),
    script:
        "../scripts/figure_steering.py"


rule figure_table:
    input:
        table=res("tables/{table}.parquet"),
    output:
        png=report(
            res("figures/{table}.png"),
            caption="../report/tables.rst",
            category="Tables",
        ),
        pdf=res("figures/{table}.pdf"),
    log:
        log_("figures/figure_{table}.log"),
    wildcard_constraints:
        table="table1|table2",
    conda:
        "../../envs/interp.yaml"
    params:
        code=code_of("figure_table.py"),
        style=figure_style,
        columns=table_columns,
        ci=setting("eval.ci"),
    script:
        "../scripts/figure_table.py"
