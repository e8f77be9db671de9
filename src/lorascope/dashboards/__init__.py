"""Stage dashboards (workflow/rules/dashboards.smk, rule `dashboards`).

Consumes: `features/{kind}/{features,contexts}.parquet`,
`autointerp/{explanations,assignments,scores}/{kind}.parquet`,
`autointerp/usage.json`, `ablation/{feature_kl,direct_effects,sae_decoder}.parquet`.
Produces: `dashboards/` (index.html, one page per feature, static assets),
static HTML that opens from disk.

- `build`: the pages; `assets/`: templates, CSS and JS.
- `causal`: ablation KL, promoted/suppressed tokens and SAE decoder maps.
- `export`: rule `sae_export`: `export/sae/` (SAELens dir with provenance
  metadata) and `export/features.json` (Neuronpedia-style features).
"""

__all__ = ["build", "causal", "export"]
