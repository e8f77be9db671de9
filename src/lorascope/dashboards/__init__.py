"""Stage dashboards (workflow/rules/dashboards.smk, rule `dashboards`).

Consumes: `features/{kind}/{features,contexts}.parquet`,
`autointerp/{explanations,assignments,scores}/{kind}.parquet`,
`autointerp/usage.json`.
Produces: `dashboards/` (index.html, one page per feature, static assets),
static HTML that opens from disk.

- `build`: the pages; `assets/`: templates, CSS and JS.
"""

__all__ = ["build"]
