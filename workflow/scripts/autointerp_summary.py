"""Rule autointerp_summary: class shares, category shares, SAE densities, usage."""

import polars as pl

from lorascope.autointerp.summary import (
    category_shares,
    class_shares,
    sae_category_density,
    score_means,
    status_counts,
    usage_summary,
)
from lorascope.core.io import read_json, write_json, write_table
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    section, kinds = smk.params.ai["section"], smk.params.kinds
    n_boot, seed = section["bootstrap_samples"], section["seed"]

    def read(paths):
        return {k: pl.read_parquet(p) for k, p in zip(kinds, paths, strict=True)}

    expl, assign = read(smk.input.explanations), read(smk.input.assignments)
    scores = read(smk.input.scores)
    tables = {
        "classes": class_shares(expl, n_boot, seed),
        "category_shares": category_shares(assign, n_boot, seed),
        "sae_category_density": sae_category_density(
            assign["sae"], pl.read_parquet(smk.input.sae_features)
        ),
        "scores": score_means(scores, n_boot, seed),
    }
    for path, (name, df) in zip(smk.output.summaries, tables.items(), strict=True):
        write_table(df, path.removesuffix(".parquet"), title=f"autointerp {name}")
    usage_paths = [*smk.input.usage, smk.input.usage_categories]
    usage = pl.concat([pl.read_parquet(p) for p in usage_paths])
    explainers = {
        "explanations": sorted({e for df in expl.values() for e in df["explainer"]}),
        "categories": read_json(smk.input.categories)["explainer"],
        "detection_judge": sorted({e for df in scores.values() for e in df["judge"]}),
    }
    failures = {
        f"{step}_{k}": int((df[k]["status"] == "failed").sum())
        for step, df in (("explain", expl), ("assign", assign), ("score", scores))
        for k in kinds
    }
    # Malformed judge replies per scorer (detection is score_{kind} above).
    for step, prefix in (("fuzz", "fuzzing_"), ("simulate", "simulation_")):
        for k in kinds:
            failures[f"{step}_{k}"] = int(
                (scores[k][f"{prefix}status"] == "failed").sum()
            )
    summary = usage_summary(usage, explainers, failures)
    # Left out for lack of real contexts (activations.min_contexts), not failed.
    summary["excluded_features"] = {
        k: status_counts(expl[k])["n_excluded"] for k in kinds
    }
    log.info("usage: %s", summary["total"])
    write_json(summary, smk.output.usage)
