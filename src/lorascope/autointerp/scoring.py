"""Detection scores for explanations (rule autointerp_score), beyond the paper.

A judge sees a feature's explanation and a shuffled mix of `n_activating`
of its top contexts and `n_nonactivating` windows centred on tokens outside
its top-k (the top contexts of other features of the same kind, excluding
any (doc, pos) among this feature's own), each with its centre token marked,
and says which ones the feature fires on. Balanced accuracy = mean of the hit
rate on activating and the correct-rejection rate on non-activating windows.
The judge is the explainer's provider (`providers.PROVIDERS`); the offline one
predicts from the explanation's tokens (`offline.judge_offline`).

scores/{kind}.parquet: feature:i64, kind, n_pos, n_neg, tp, fn, tn, fp,
balanced_accuracy:f64?, status, error:str?, raw:str?, judge. Features left
out of the explanations (status no_contexts / few_contexts) keep that status.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.autointerp.explain import EXCLUDED
from lorascope.autointerp.providers import provider_for
from lorascope.autointerp.settings import llm_settings
from lorascope.core.feature_tables import contexts_by_feature

__all__ = ["score_kind", "balanced_accuracy", "detection_windows", "SCORE_SCHEMA"]

SCORE_SCHEMA = {
    "feature": pl.Int64, "kind": pl.String, "n_pos": pl.Int32, "n_neg": pl.Int32,
    "tp": pl.Int32, "fn": pl.Int32, "tn": pl.Int32, "fp": pl.Int32,
    "balanced_accuracy": pl.Float64, "status": pl.String, "error": pl.String,
    "raw": pl.String, "judge": pl.String,
}  # fmt: skip


def balanced_accuracy(labels: list[bool], preds: list[bool]) -> dict:
    y, p = np.asarray(labels, bool), np.asarray(preds, bool)
    tp, fn = int((y & p).sum()), int((y & ~p).sum())
    tn, fp = int((~y & ~p).sum()), int((~y & p).sum())
    rates = [tp / (tp + fn)] if tp + fn else []
    rates += [tn / (tn + fp)] if tn + fp else []
    ba = float(np.mean(rates)) if rates else None
    return {"tp": tp, "fn": fn, "tn": tn, "fp": fp, "balanced_accuracy": ba}


def detection_windows(fid, by_feature, pool, n_pos, n_neg, seed):
    """Shuffled [(context, is_activating)] for one feature; seeded per feature."""
    rng = np.random.default_rng([seed, fid])
    own = by_feature[fid]
    pos = [own[i] for i in rng.permutation(len(own))[:n_pos]]
    taken = {(c["doc"], c["pos"]) for c in own}
    neg = []
    for i in rng.permutation(len(pool)):
        if len(neg) == n_neg:
            break
        c = pool[i]
        if c["feature"] != fid and (c["doc"], c["pos"]) not in taken:
            taken.add((c["doc"], c["pos"]))
            neg.append(c)
    windows = [(c, True) for c in pos] + [(c, False) for c in neg]
    return [windows[i] for i in rng.permutation(len(windows))]


def score_kind(explanations, contexts, section, run, cache_path, kind):
    det, seed = section["detection"], section["seed"]
    judge = provider_for(llm_settings(section, run), section, cache_path)
    contexts_file = f"features/{kind}/contexts.parquet"
    by_feature = contexts_by_feature(contexts, None, contexts_file)
    pool = [c for rows in by_feature.values() for c in rows]
    rows, items, labels = {}, [], {}
    for e in explanations.sort("feature").iter_rows(named=True):
        fid = int(e["feature"])
        row = dict.fromkeys(SCORE_SCHEMA)
        row.update(feature=fid, kind=kind, status="ok", judge=judge.label)
        rows[fid] = row
        if e["status"] in EXCLUDED:  # left out, not failed
            row.update(status=e["status"], error=e["error"])
            continue
        if e["status"] != "ok":
            row.update(status="failed", error=f"explanation {e['status']}")
            continue
        if fid not in by_feature:  # explained, its contexts gone since
            row.update(status="failed", error=f"no contexts in {contexts_file}")
            continue
        win = detection_windows(
            fid, by_feature, pool, det["n_activating"], det["n_nonactivating"], seed
        )
        labels[fid] = [is_pos for _, is_pos in win]
        row.update(n_pos=sum(labels[fid]), n_neg=len(win) - sum(labels[fid]))
        items.append((fid, e["explanation"], [c for c, _ in win]))
    outcomes, usage = judge.detect(f"score_{kind}", items)
    for fid, out in outcomes.items():
        rows[fid].update(status=out.status, error=out.error, raw=out.raw)
        if out.value is not None:
            rows[fid].update(balanced_accuracy(labels[fid], out.value))
    return pl.DataFrame(list(rows.values()), schema=SCORE_SCHEMA), usage
