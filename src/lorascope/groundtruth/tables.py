"""The ground-truth tables: per feature and role, matched roles, summary.

Used by rule `ground_truth` (and the SAE architecture comparison). Written
under `groundtruth/`:

- `scores.parquet`: source (sft|generation), kind, feature, label, role,
  n_pos, n_tokens, auroc, best_f1, threshold: every feature against every
  role, over the scored tokens of that source;
- `matched.parquet` (+ .md): per source and kind, each role matched one to
  one to a feature (maximising the summed best F1), with that feature's
  explanation and whether it names the role (`metrics.names_role`);
- `summary.parquet` (+ .md): per source and kind, the matched recovery
  (mean best F1 and mean AUROC of the matched features), the share of
  matched explanations naming their role, and who explained them.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.groundtruth.metrics import matched_frame, role_scores
from lorascope.toy.roles import ROLES

__all__ = ["SCORES_SCHEMA", "score_kind", "summarise"]

SCORES_SCHEMA = {
    "source": pl.String, "kind": pl.String, "feature": pl.Int64,
    "label": pl.String, "role": pl.String, "n_pos": pl.Int64,
    "n_tokens": pl.Int64, "auroc": pl.Float64, "best_f1": pl.Float64,
    "threshold": pl.Float64,
}  # fmt: skip


def score_kind(
    kind: str,
    source: str,
    values_TF: np.ndarray,
    labels_TR: np.ndarray,
    features: pl.DataFrame,
    explanations: dict[int, str],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(scores rows, matched rows) of one kind on one source's tokens."""
    if values_TF.shape[1] != features.height:
        raise ValueError(
            f"{kind}: {values_TF.shape[1]} value columns for "
            f"{features.height} feature rows"
        )
    auc, f1, thr = role_scores(values_TF, labels_TR)
    F, R = auc.shape
    n_pos = labels_TR.sum(0)
    scores = pl.DataFrame(
        {
            "source": [source] * (F * R),
            "kind": [kind] * (F * R),
            "feature": np.repeat(features["feature"].to_numpy(), R),
            "label": np.repeat(np.array(features["label"].to_list(), object), R),
            "role": list(ROLES) * F,
            "n_pos": np.tile(n_pos, F).astype(np.int64),
            "n_tokens": np.full(F * R, labels_TR.shape[0], np.int64),
            "auroc": auc.reshape(-1),
            "best_f1": f1.reshape(-1),
            "threshold": thr.reshape(-1),
        },
        schema=SCORES_SCHEMA,
    )
    prevalence = n_pos / max(labels_TR.shape[0], 1)
    matched = matched_frame(
        kind, source, list(ROLES), auc, f1, features, explanations, prevalence
    )
    return scores, matched


def summarise(matched: pl.DataFrame, explainers: dict[str, str]) -> pl.DataFrame:
    """Matched recovery per source and kind."""
    out = (
        matched.group_by("source", "kind", maintain_order=True)
        .agg(
            pl.len().alias("n_roles"),
            pl.col("best_f1").mean().alias("matched_f1"),
            pl.col("auroc").mean().alias("matched_auroc"),
            pl.col("f1_all_tokens").mean().alias("f1_all_tokens"),
            pl.col("names_role").cast(pl.Float64).mean().alias("names_role_share"),
        )
        .with_columns(
            pl.col("kind").replace_strict(explainers, default=None).alias("explainer")
        )
    )
    return out
