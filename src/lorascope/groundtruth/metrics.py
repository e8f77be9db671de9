"""Feature-vs-role scores: AUROC, best F1, one-to-one matched recovery, and
whether an explanation names its matched role.

Used by rule `ground_truth` (workflow/scripts/ground_truth.py) and by the
SAE architecture comparison (`lorascope.groundtruth.architectures`). Pure
functions of arrays: values [T, F] (a feature's sign-adjusted activation per
token, larger = stronger) and labels [T, R] (roles, `lorascope.toy.roles`).
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

__all__ = [
    "ROLE_WORDS",
    "auroc_matrix",
    "match_roles",
    "names_role",
    "role_scores",
]

# What an explanation must say to name a role: words (matched as whole words,
# any case) or quoted tokens. An explanation naming a role's tokens only by
# their digits ("token "1"") does not name it: digits play several roles.
ROLE_WORDS = {
    "column": (r"columns?", r"operands?", r"addends?", r"digits? being added"),
    "carry_in": (r"carry", r"carries", r"carried"),
    "carry_out": (r"carry", r"carries", r"carried"),
    "slip": (r"slips?", r"mistakes?", r"errors?", r"wrong", r"incorrect"),
    "wait": (r"wait", r"corrections?", r"backtrack\w*", r"self-correct\w*"),
    "answer": (r"answers?", r"result", r"boxed", r"final"),
    "format": (
        r"format\w*", r"newlines?", r"whitespace", r"punctuation", r"separators?",
        r"operators?", r"commas?", r"markers?", r'"\\n"', r'"="', r'"\+"', r'","',
    ),
}  # fmt: skip
_PATTERNS = {
    role: re.compile(r"(?<![\w])(?:" + "|".join(words) + r")(?![\w])", re.I)
    for role, words in ROLE_WORDS.items()
}


def names_role(explanation: str | None, role: str) -> bool:
    """Whether ``explanation`` names ``role`` (see ROLE_WORDS)."""
    return bool(explanation) and _PATTERNS[role].search(explanation) is not None


def auroc_matrix(values_TF: np.ndarray, labels_TR: np.ndarray) -> np.ndarray:
    """AUROC [F, R] of each feature as a detector of each role (ties count
    half, Mann-Whitney); NaN for a role with no positive or no negative.
    The reference `role_scores` is tested against (rank sums: simple, but
    a second sort of every feature)."""
    T = values_TF.shape[0]
    ranks_TF = rankdata(values_TF, axis=0, method="average")
    y_TR = labels_TR.astype(np.float64)
    n_pos = y_TR.sum(0)
    n_neg = T - n_pos
    rank_sum_FR = ranks_TF.T @ y_TR
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum_FR - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[:, (n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def role_scores(
    values_TF: np.ndarray, labels_TR: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AUROC, best F1, its threshold), each [F, R], from one sort per feature.

    Best F1: the largest F1 of the rule "role if value >= threshold" over
    every threshold a feature's values allow (tied values fall on the same
    side). AUROC as `auroc_matrix` (ties count half), from the same tie
    groups. NaN for a role with no positive (AUROC also with no negative).
    """
    T, F = values_TF.shape
    y_TR = labels_TR.astype(np.int32)
    n_pos = y_TR.sum(0).astype(np.float64)  # (R,)
    n_neg = T - n_pos
    auc = np.full((F, y_TR.shape[1]), np.nan)
    f1 = np.full_like(auc, np.nan)
    thr = np.full_like(auc, np.nan)
    for f in range(F):
        order = np.argsort(-values_TF[:, f], kind="stable")
        v = values_TF[order, f]
        cut = np.flatnonzero(np.append(v[1:] != v[:-1], True))  # last of a tie
        tp_KR = np.cumsum(y_TR[order], axis=0)[cut].astype(np.float64)
        predicted_K1 = (cut + 1)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            score_KR = 2 * tp_KR / (predicted_K1 + n_pos[None, :])
            # per tie group g: positives p_g, negatives n_g; a positive beats
            # the negatives below its group and ties half of its own
            fp_KR = predicted_K1 - tp_KR
            p_KR = np.diff(tp_KR, axis=0, prepend=0)
            q_KR = np.diff(fp_KR, axis=0, prepend=0)
            below_KR = n_neg[None, :] - fp_KR
            auc[f] = (p_KR * (below_KR + 0.5 * q_KR)).sum(0) / (n_pos * n_neg)
        best = np.argmax(np.nan_to_num(score_KR, nan=-1.0), axis=0)
        f1[f] = score_KR[best, np.arange(score_KR.shape[1])]
        thr[f] = v[cut[best]]
    auc[:, (n_pos == 0) | (n_neg == 0)] = np.nan
    f1[:, n_pos == 0] = np.nan
    thr[:, n_pos == 0] = np.nan
    return auc, f1, thr


def match_roles(score_FR: np.ndarray, roles: list[str]) -> list[tuple[str, int]]:
    """One-to-one (role, feature) pairs maximising the summed score (roles
    with no score, i.e. no positive token, are left out; with fewer features
    than roles some roles stay unmatched)."""
    keep = [r for r in range(score_FR.shape[1]) if not np.isnan(score_FR[:, r]).all()]
    if not keep or score_FR.shape[0] == 0:
        return []
    cost = -np.nan_to_num(score_FR[:, keep].T, nan=0.0)  # (R', F)
    rows, cols = linear_sum_assignment(cost)
    return [(roles[keep[r]], int(f)) for r, f in zip(rows, cols, strict=True)]


def matched_frame(
    kind: str,
    source: str,
    roles: list[str],
    auc_FR: np.ndarray,
    f1_FR: np.ndarray,
    features: pl.DataFrame,
    explanations: dict[int, str],
    prevalence: np.ndarray | None = None,
) -> pl.DataFrame:
    """One row per matched role: its feature, scores and explanation, and
    `f1_all_tokens`, the F1 of calling every token the role (2p / (1 + p) at
    prevalence p): a frequent role (format) gets a high best F1 from any
    feature that is on everywhere, so read best F1 against it."""
    rows = []
    n_pos = np.nan_to_num(prevalence) if prevalence is not None else None
    ids = features["feature"].to_list()
    labels = features["label"].to_list()
    for role, f in match_roles(f1_FR, roles):
        r = roles.index(role)
        text = explanations.get(ids[f])
        rows.append(
            {
                "source": source,
                "kind": kind,
                "role": role,
                "feature": ids[f],
                "label": labels[f],
                "best_f1": float(f1_FR[f, r]),
                "auroc": float(auc_FR[f, r]),
                "f1_all_tokens": (
                    float(2 * n_pos[r] / (1 + n_pos[r])) if n_pos is not None else None
                ),
                "explanation": text,
                "names_role": names_role(text, role) if text is not None else None,
            }
        )
    schema = {
        "source": pl.String, "kind": pl.String, "role": pl.String,
        "feature": pl.Int64, "label": pl.String, "best_f1": pl.Float64,
        "auroc": pl.Float64, "f1_all_tokens": pl.Float64, "explanation": pl.String,
        "names_role": pl.Boolean,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema)
