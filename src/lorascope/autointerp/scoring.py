"""Explanation scores (rule autointerp_score), beyond the paper: detection
here, fuzzing and simulation in `scorers.py`.

Detection: a judge sees a feature's explanation and a shuffled mix of
`n_activating` of its held-out contexts and `n_nonactivating` windows centred
on tokens outside
its top-k (the top contexts of other features of the same kind, excluding
any (doc, pos) among this feature's own), each with its centre token marked,
and says which ones the feature fires on. Balanced accuracy = mean of the hit
rate on activating and the correct-rejection rate on non-activating windows.
The judge is the explainer's provider (`providers.PROVIDERS`); the offline one
predicts from the explanation's tokens (`offline.judge_offline`).

Every scorer reads only the feature's score split (`split.py`): contexts
its explanation was never written from. Detection's activating windows are
the first `n_activating` of them (spread over the activation quantiles);
fuzzing and simulation are in `scorers.py`. `autointerp.scorers` says which
run; one that does not has status `not_run` and null scores.

scores/{kind}.parquet: feature:i64, kind, n_scored:i32? (contexts held out),
detection: n_pos, n_neg, tp, fn, tn, fp, balanced_accuracy:f64?, status,
error:str?, raw:str?; fuzzing:f64? (balanced accuracy), fuzzing_n:i32?
(windows), fuzzing_status, fuzzing_error, fuzzing_raw; simulation:f64?
(Pearson r), simulation_tokens:i32?, simulation_status, simulation_error,
simulation_raw; judge. A status is ok, failed (malformed replies after the
retries, the raw reply kept; never a score of 0), undefined (simulation:
constant prediction or truth), not_run, or the explanation's no_contexts /
few_contexts (left out).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.autointerp.explain import EXCLUDED
from lorascope.autointerp.providers import provider_for
from lorascope.autointerp.scorers import (
    FUZZING,
    SIMULATION,
    correlation,
    fuzz_windows,
    simulation_windows,
)
from lorascope.autointerp.settings import kind_section, llm_settings
from lorascope.autointerp.split import split_contexts
from lorascope.core.feature_tables import contexts_by_feature

__all__ = [
    "SCORERS",
    "SCORE_SCHEMA",
    "balanced_accuracy",
    "detection_windows",
    "score_kind",
]

SCORE_SCHEMA = {
    "feature": pl.Int64, "kind": pl.String, "n_scored": pl.Int32,
    "n_pos": pl.Int32, "n_neg": pl.Int32,
    "tp": pl.Int32, "fn": pl.Int32, "tn": pl.Int32, "fp": pl.Int32,
    "balanced_accuracy": pl.Float64, "status": pl.String, "error": pl.String,
    "raw": pl.String,
    "fuzzing": pl.Float64, "fuzzing_n": pl.Int32, "fuzzing_status": pl.String,
    "fuzzing_error": pl.String, "fuzzing_raw": pl.String,
    "simulation": pl.Float64, "simulation_tokens": pl.Int32,
    "simulation_status": pl.String, "simulation_error": pl.String,
    "simulation_raw": pl.String, "judge": pl.String,
}  # fmt: skip
# Scorer -> the prefix of its status/error/raw columns.
SCORERS = {"detection": "", "fuzzing": "fuzzing_", "simulation": "simulation_"}


def balanced_accuracy(labels: list[bool], preds: list[bool]) -> dict:
    y, p = np.asarray(labels, bool), np.asarray(preds, bool)
    tp, fn = int((y & p).sum()), int((y & ~p).sum())
    tn, fp = int((~y & ~p).sum()), int((~y & p).sum())
    rates = [tp / (tp + fn)] if tp + fn else []
    rates += [tn / (tn + fp)] if tn + fp else []
    ba = float(np.mean(rates)) if rates else None
    return {"tp": tp, "fn": fn, "tn": tn, "fp": fp, "balanced_accuracy": ba}


def detection_windows(fid, by_feature, pool, n_pos, n_neg, seed, positives=None):
    """Shuffled [(context, is_activating)] for one feature; seeded per feature.
    Activating windows: the first `n_pos` of `positives` (the score split),
    or, without it, `n_pos` random contexts of the feature."""
    rng = np.random.default_rng([seed, fid])
    own = by_feature[fid]
    pos = [own[i] for i in rng.permutation(len(own))[:n_pos]]
    if positives is not None:
        pos = positives[:n_pos]
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


def _set(row, scorer, status, error=None, raw=None):
    p = SCORERS[scorer]
    row.update({f"{p}status": status, f"{p}error": error, f"{p}raw": raw})


def score_kind(explanations, contexts, section, run, cache_path, kind):
    det, seed, wanted = section["detection"], section["seed"], section["scorers"]
    shown = kind_section(section, kind)["example_window"]
    fz, sim = section["fuzzing"], section["simulation"]
    fz_window = shown if fz["window"] is None else fz["window"]
    sim_window = shown if sim["window"] is None else sim["window"]
    judge = provider_for(llm_settings(section, run), section, cache_path)
    contexts_file = f"features/{kind}/contexts.parquet"
    by_feature = contexts_by_feature(contexts, None, contexts_file, sample=True)
    pool = [c for rows in by_feature.values() for c in rows]
    rows, items, truth = {}, {s: [] for s in SCORERS}, {}
    for e in explanations.sort("feature").iter_rows(named=True):
        fid = int(e["feature"])
        row = dict.fromkeys(SCORE_SCHEMA)
        row.update(feature=fid, kind=kind, judge=judge.label)
        rows[fid] = row
        for scorer in SCORERS:
            _set(row, scorer, "ok" if scorer in wanted else "not_run")
        if e["status"] in EXCLUDED:  # left out, not failed
            why = (e["status"], e["error"])
        elif e["status"] != "ok":
            why = ("failed", f"explanation {e['status']}")
        elif fid not in by_feature:  # explained, its contexts gone since
            why = ("failed", f"no contexts in {contexts_file}")
        else:
            held = split_contexts(by_feature[fid], section["split"], seed, fid)[1]
            row["n_scored"] = len(held)
            why = None if held else ("few_contexts", "no context left to score")
        if why is not None:
            for scorer in wanted:
                _set(row, scorer, *why)
            continue
        expl = e["explanation"]
        if "detection" in wanted:
            win = detection_windows(fid, by_feature, pool, det["n_activating"],
                                    det["n_nonactivating"], seed, held)  # fmt: skip
            truth["detection", fid] = [is_pos for _, is_pos in win]
            n_pos = sum(truth["detection", fid])
            row.update(n_pos=n_pos, n_neg=len(win) - n_pos)
            items["detection"].append((fid, expl, [c for c, _ in win]))
        if "fuzzing" in wanted:
            fw = fuzz_windows(held, fz, fz_window, seed, fid)
            truth["fuzzing", fid] = [w["label"] for w in fw]
            row["fuzzing_n"] = len(fw)
            items["fuzzing"].append((fid, expl, fw))
        if "simulation" in wanted:
            sw = simulation_windows(held, sim, sim_window)
            truth["simulation", fid] = [w["acts"] for w in sw]
            row["simulation_tokens"] = sum(len(w["tokens"]) for w in sw)
            items["simulation"].append((fid, expl, sw))
    usage = []
    for scorer, step in (("detection", "score"), ("fuzzing", "fuzz"),
                         ("simulation", "simulate")):  # fmt: skip
        if scorer == "detection":
            outcomes, use = judge.detect(f"{step}_{kind}", items[scorer])
        else:
            what = FUZZING if scorer == "fuzzing" else SIMULATION
            outcomes, use = judge.judge(f"{step}_{kind}", what, items[scorer])
        usage += use
        for fid, out in outcomes.items():
            row, want = rows[fid], truth[scorer, fid]
            _set(row, scorer, out.status, out.error, out.raw)
            if out.value is None:
                continue
            if scorer == "detection":
                row.update(balanced_accuracy(want, out.value))
            elif scorer == "fuzzing":
                row["fuzzing"] = balanced_accuracy(want, out.value)["balanced_accuracy"]
            else:
                row["simulation"] = correlation(want, out.value)
                if row["simulation"] is None:
                    _set(
                        row,
                        scorer,
                        "undefined",
                        "constant prediction or truth",
                        out.raw,
                    )
    return pl.DataFrame(list(rows.values()), schema=SCORE_SCHEMA), usage
