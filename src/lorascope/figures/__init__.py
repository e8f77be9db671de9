"""Stage figures (workflow/rules/figures.smk): paper figures as report outputs.

Consumes: `autointerp/summary/*.parquet`, `autointerp/categories.json`,
`autointerp/usage.json`, `ablation/kl_*.parquet`, `steering/sweep.parquet`,
`tables/table{1,2}.parquet`, `ablation/feature_kl.parquet` and
`autointerp/{explanations,scores}/{lora,sae}.parquet` (causal figure).
Produces: `figures/{name}.{png,pdf}`.

One small module per figure family, each with a `draw(data, options, style)`
that the rule figure_<name> calls (workflow/scripts/figure.py; the figure
table in workflow/rules/figures.smk says what each reads):

- `classes`: Fig. 1 left, monosemanticity classes per feature kind.
- `categories`: Fig. 1 right, category shares and LoRA/MLP enrichment.
- `sae_density`: Fig. 2, SAE activation mass by category/subcategory.
- `ablation`: Fig. 3, KL by ablated layer and module x layer heatmap.
- `table_image`: Tables 1 and 2 as images.
- `steering`: the steering sweep.
- `causal`: ablation KL against interpretability (beyond the paper).
- `recovery_rank`: recovery and accuracy against LoRA rank and trainable
  parameters (the sweep's `lorascope.sweeps.recovery` table).
- `emergence`: share of the final adapter's features matched per training
  checkpoint (`lorascope.sweeps.tables.emergence`).
- `style`: shared geometry, fonts, colours, footers and atomic saving.
- `readme`: downscaled copies for docs/figures/ (`make readme-figures`).
"""

__all__ = [
    "ablation",
    "categories",
    "causal",
    "classes",
    "emergence",
    "readme",
    "recovery_rank",
    "sae_density",
    "steering",
    "style",
    "table_image",
]
