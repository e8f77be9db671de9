"""Summaries of the autointerp outputs (rule autointerp_summary).

- `class_shares`: share of each monosemanticity class per kind, with
  percentile-bootstrap 95% intervals over features (Fig 1 left).
- `category_shares`: share of each category per kind with intervals, and the
  LoRA/MLP enrichment ratio with a bootstrap interval (Fig 1 right).
- `sae_category_density`: per category and subcategory, the normalised sum of
  SAE feature activations (each feature's mean activation over the tokens it
  was measured on, from features.parquet) (Fig 2).
- `score_means`: per kind and scorer (detection, fuzzing, simulation), the
  mean score over features with a percentile-bootstrap 95% interval, and
  how many features failed (malformed replies), were undefined, left out or
  not run (Fig 1, scores panel).
- `usage_summary`: calls, tokens, estimated cost and failures per step.
Failed features are counted (`n_failed`), never folded into a class; features
left out for lack of real contexts (status `no_contexts` / `few_contexts`,
activations.min_contexts) are counted apart (`n_excluded`). `population`
says what a kind's features are (from features.parquet), for figures.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.autointerp.explain import EXCLUDED
from lorascope.autointerp.scoring import SCORERS

__all__ = [
    "EXCLUDED",
    "status_counts",
    "bootstrap_shares",
    "class_shares",
    "category_shares",
    "sae_category_density",
    "score_means",
    "usage_summary",
]


def _resample_shares(codes: np.ndarray, n_levels: int, n_boot: int, rng) -> np.ndarray:
    """(n_boot, n_levels) shares of each level over resampled features."""
    n = len(codes)
    idx_BN = rng.integers(0, n, size=(n_boot, n))
    picked_BN = codes[idx_BN] + n_levels * np.arange(n_boot)[:, None]
    counts = np.bincount(picked_BN.ravel(), minlength=n_boot * n_levels)
    return counts.reshape(n_boot, n_levels) / n


def bootstrap_shares(values, levels, n_boot: int, seed: int) -> dict:
    """level -> (share, ci_low, ci_high, boot shares) over `values`."""
    codes = np.array([levels.index(v) for v in values], dtype=np.int64)
    if len(codes) == 0:
        return {lv: (None, None, None, None) for lv in levels}
    boot_BL = _resample_shares(codes, len(levels), n_boot, np.random.default_rng(seed))
    share_L = np.bincount(codes, minlength=len(levels)) / len(codes)
    lo_L, hi_L = np.percentile(boot_BL, [2.5, 97.5], axis=0)
    return {
        lv: (float(share_L[i]), float(lo_L[i]), float(hi_L[i]), boot_BL[:, i])
        for i, lv in enumerate(levels)
    }


def status_counts(df: pl.DataFrame) -> dict:
    """n_ok, n_failed and n_excluded (left out for lack of contexts) of a table."""
    status = df["status"]
    n_excluded = int(status.is_in(list(EXCLUDED)).sum())
    n_ok = int((status == "ok").sum())
    return {
        "n_ok": n_ok,
        "n_failed": df.height - n_ok - n_excluded,
        "n_excluded": n_excluded,
    }


def _population(df: pl.DataFrame) -> str | None:
    if "population" not in df.columns:
        return None
    return "; ".join(sorted(set(df["population"].drop_nulls().to_list()))) or None


def class_shares(explanations: dict[str, pl.DataFrame], n_boot: int, seed: int):
    rows = []
    for kind, df in explanations.items():
        ok = df.filter(pl.col("status") == "ok")
        res = bootstrap_shares(ok["classification"].to_list(), [0, 1, 2], n_boot, seed)
        for cls, (share, lo, hi, _) in res.items():
            rows.append(
                {
                    "kind": kind,
                    "classification": cls,
                    "n": int((ok["classification"] == cls).sum()),
                    **status_counts(df),
                    "share": share,
                    "ci_low": lo,
                    "ci_high": hi,
                    "explainer": ",".join(sorted(set(df["explainer"].to_list()))),
                    "population": _population(df),
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None)


def category_shares(assignments: dict[str, pl.DataFrame], n_boot: int, seed: int):
    oks = {k: df.filter(pl.col("status") == "ok") for k, df in assignments.items()}
    cats = sorted({c for df in oks.values() for c in df["category"].to_list()})
    res = {
        k: bootstrap_shares(df["category"].to_list(), cats, n_boot, seed)
        for k, df in oks.items()
    }
    rows = []
    for kind, per_cat in res.items():
        for cat, (share, lo, hi, _) in per_cat.items():
            row = {
                "kind": kind,
                "category": cat,
                "n": int((oks[kind]["category"] == cat).sum()),
                **status_counts(assignments[kind]),
                "share": share,
                "ci_low": lo,
                "ci_high": hi,
                "enrichment": None,
                "enrichment_ci_low": None,
                "enrichment_ci_high": None,
            }
            if kind == "lora" and "mlp" in res:
                row.update(_enrichment(per_cat[cat], res["mlp"][cat]))
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def _enrichment(lora, mlp) -> dict:
    """LoRA share / MLP share; null when the MLP share is 0 or missing."""
    if lora[0] is None or not mlp[0]:
        return {}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_B = lora[3] / mlp[3]
    ratio_B = ratio_B[np.isfinite(ratio_B)]
    lo, hi = np.percentile(ratio_B, [2.5, 97.5]) if len(ratio_B) else (None, None)
    return {
        "enrichment": lora[0] / mlp[0],
        "enrichment_ci_low": None if lo is None else float(lo),
        "enrichment_ci_high": None if hi is None else float(hi),
    }


def sae_category_density(assign: pl.DataFrame, features: pl.DataFrame):
    df = assign.filter(pl.col("status") == "ok").join(
        features.select("feature", pl.col("mean").clip(lower_bound=0).alias("act")),
        on="feature",
        how="left",
    )
    total = float(df["act"].sum()) or 1.0
    out = []
    for level, keys in (
        ("category", ["category"]),
        ("subcategory", ["category", "subcategory"]),
    ):
        g = df.group_by(keys).agg(
            pl.len().alias("n_features"), pl.col("act").sum().alias("activation_sum")
        )
        if level == "category":
            g = g.with_columns(pl.lit(None, pl.String).alias("subcategory"))
        out.append(g.with_columns(pl.lit(level).alias("level")))
    res = pl.concat(
        [
            o.select("level", "category", "subcategory", "n_features", "activation_sum")
            for o in out
        ]
    )
    return res.with_columns((pl.col("activation_sum") / total).alias("density")).sort(
        "level", "category", "subcategory", nulls_last=True
    )


# Scorer -> its score column in scores/{kind}.parquet.
SCORE_COLUMNS = {
    "detection": "balanced_accuracy",
    "fuzzing": "fuzzing",
    "simulation": "simulation",
}


def bootstrap_mean(values: np.ndarray, n_boot: int, seed: int):
    """(mean, ci_low, ci_high): percentile bootstrap over the values."""
    if len(values) == 0:
        return None, None, None
    rng = np.random.default_rng(seed)
    boot_B = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    lo, hi = np.percentile(boot_B, [2.5, 97.5])
    return float(values.mean()), float(lo), float(hi)


def score_means(scores: dict[str, pl.DataFrame], n_boot: int, seed: int):
    """One row per (kind, scorer): mean over the features it scored, 95%
    interval, and counts by status. A failed or undefined feature is counted,
    never averaged in as a 0."""
    rows = []
    for kind, df in scores.items():
        for scorer, prefix in SCORERS.items():
            status = df[f"{prefix}status"]
            ok = df.filter(status == "ok")[SCORE_COLUMNS[scorer]].drop_nulls()
            mean, lo, hi = bootstrap_mean(ok.to_numpy().astype(float), n_boot, seed)
            rows.append(
                {
                    "kind": kind,
                    "scorer": scorer,
                    "n_ok": ok.len(),
                    "n_failed": int((status == "failed").sum()),
                    "n_undefined": int((status == "undefined").sum()),
                    "n_excluded": int(status.is_in(list(EXCLUDED)).sum()),
                    "n_not_run": int((status == "not_run").sum()),
                    "mean": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "judge": ",".join(sorted(set(df["judge"].to_list()))),
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None)


def usage_summary(usage: pl.DataFrame, explainers: dict, failures: dict) -> dict:
    """usage.json: totals and per-step sums; `explainer` says offline when so."""

    def sums(df):
        paid = df.filter(~pl.col("cached")) if df.height else df
        cost = paid["cost_usd"].drop_nulls() if df.height else []
        return {
            "calls": df.height,
            "paid_calls": paid.height,
            "cached_calls": df.height - paid.height,
            "http_requests": int(df["http_requests"].sum()) if df.height else 0,
            "input_tokens": int(paid["input_tokens"].sum()) if df.height else 0,
            "output_tokens": int(paid["output_tokens"].sum()) if df.height else 0,
            "estimated_cost_usd": float(sum(cost)),
            "calls_without_price": int(paid["cost_usd"].is_null().sum())
            if df.height
            else 0,
        }

    steps = sorted(set(usage["step"].to_list())) if usage.height else []
    return {
        "explainer": explainers,
        "total": sums(usage),
        "steps": {s: sums(usage.filter(pl.col("step") == s)) for s in steps},
        "failed_features": failures,
    }
