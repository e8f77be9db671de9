"""The ground-truth job from loaded inputs to its tables (rule `ground_truth`).

The script reads files and calls `ground_truth`; tests call it on tiny
models. Kinds whose feature table is empty are skipped (nothing to score).
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from lorascope.groundtruth.tables import score_kind, summarise
from lorascope.groundtruth.tokens import TokenSet, stacked_roles
from lorascope.groundtruth.values import feature_values, unit_values
from lorascope.toy.roles import ROLES

log = logging.getLogger(__name__)

__all__ = ["ground_truth", "tokens_frame"]


def tokens_frame(ts: TokenSet) -> pl.DataFrame:
    """groundtruth/tokens.parquet: source, doc, pos, token, scored, a bool
    column per role."""
    n = [len(s) for s in ts.seqs]
    roles = stacked_roles(ts)
    data = {
        "source": np.repeat(ts.source, n).tolist(),
        "doc": np.repeat(ts.doc, n).tolist(),
        "pos": np.concatenate([np.arange(k) for k in n]).astype(np.int32),
        "token": [t for toks in ts.tokens for t in toks],
        "scored": np.concatenate(ts.scored),
    }
    data |= {role: roles[:, i] for i, role in enumerate(ROLES)}
    return pl.DataFrame(data)


def ground_truth(
    ts: TokenSet,
    model,
    sae,
    meta: dict,
    features: dict[str, pl.DataFrame],
    explanations: dict[str, pl.DataFrame],
    batch_tokens: int,
    device,
) -> dict[str, pl.DataFrame]:
    """{scores, matched, summary, tokens} frames (groundtruth.tables)."""
    units = unit_values(model, ts.seqs, meta, sae, batch_tokens, device)
    tokens = tokens_frame(ts)
    labels_TR = stacked_roles(ts)
    scored_T = tokens["scored"].to_numpy()
    source_T = tokens["source"].to_numpy()
    scores, matched, explainers = [], [], {}
    for kind, table in features.items():
        if kind not in units or table.height == 0:
            log.info("%s: no values or no features, not scored", kind)
            continue
        vals_TF = feature_values(
            kind, units[kind], table, meta.get("mlp_neurons_per_layer") or 0
        )
        expl = explanations[kind]
        ok = expl.filter(pl.col("status") == "ok")
        texts = dict(zip(ok["feature"], ok["explanation"], strict=True))
        explainers[kind] = ", ".join(sorted(set(expl["explainer"].drop_nulls())))
        for source in dict.fromkeys(ts.source):
            keep = scored_T & (source_T == source)
            s, m = score_kind(
                kind, source, vals_TF[keep], labels_TR[keep], table, texts
            )
            scores.append(s)
            matched.append(m)
    matched_df = pl.concat(matched)
    return {
        "scores": pl.concat(scores),
        "matched": matched_df,
        "summary": summarise(matched_df, explainers),
        "tokens": tokens,
    }
