"""Tables of rule `model_diff` from the per-sequence sums of
`lorascope.diffing.passes.measure`: per layer (`layer_table`), "Table 3:
what rank-1 captures" (`table3`), and the contexts where the full fine-tune
differs most from the rank-1 adapter (`top_contexts`).

Every ratio is a ratio of sums over the counted tokens of a set of
sequences; its interval resamples sequences with replacement (percentile
bootstrap, 95%), so long sequences weigh as they do in the point estimate.

Definitions, per layer (Δf = Δh_full, Δr = Δh_rank1, μ = mean Δf):
- r2_rank1 = 1 - Σ|Δf - Δr|² / Σ|Δf - μ|²: variance of Δh_full explained by
  Δh_rank1 taken as its prediction (no fit; 1 when equal, <= 0 when unrelated);
- cos_rank1 = Σ<Δf, Δr> / sqrt(Σ|Δf|² Σ|Δr|²);
- share_write / share_sae = Σ|P Δf|² / Σ|Δf|²: the part of Δh_full's squared
  norm in the adapter's write subspace / the top SAE features' writes, with
  chance_write / chance_sae the share of a random subspace of that dimension;
- kl_captured_proj = 1 - KL(full || base + P_W Δh_full at l) / KL(full ||
  base); kl_captured_whole the same with all of Δh_full written in at l.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from lorascope.diffing.passes import SUMS, Measured, Text

__all__ = [
    "TABLE3_ROWS",
    "layer_table",
    "resample",
    "table3",
    "token_table",
    "top_contexts",
]

K = {name: i for i, name in enumerate(SUMS)}
LAYER_METRICS = (
    "r2_rank1",
    "cos_rank1",
    "share_write",
    "share_sae",
    "kl_captured_proj",
    "kl_captured_whole",
)
# Table 3's rows: (metric, what it says).
TABLE3_ROWS = (
    ("kl_full_base", "KL(full ‖ base), nats per token"),
    ("kl_full_rank1", "KL(full ‖ rank-1), nats per token"),
    ("kl_captured_rank1", "share of KL(full ‖ base) the rank-1 adapter removes"),
    (
        "kl_captured_proj",
        "same, base + Δh_full projected on the write span at one "
        "layer (mean over layers)",
    ),  # fmt: skip
    ("r2_rank1", "variance of Δh_full explained by Δh_rank1 (mean over layers)"),
    ("cos_rank1", "cosine of Δh_full and Δh_rank1 (mean over layers)"),
    ("share_write", "share of ‖Δh_full‖² in the adapter's write span (mean)"),
    ("chance_write", "same for a random subspace of that dimension (mean)"),
    ("share_sae", "share of ‖Δh_full‖² in the top SAE features' writes (mean)"),
    ("chance_sae", "same for a random subspace of that dimension (mean)"),
)


def _ratio(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _metrics(
    w_S: np.ndarray, m: Measured, tokens_S: np.ndarray, kl_base_S, kl_rank1_S
) -> dict[str, np.ndarray]:
    """Every metric for sequence weights w_S (1 = the sample itself)."""
    sums_LK = np.tensordot(w_S, m.sums_SLK, axes=1)
    mu_LD = _ratio(np.tensordot(w_S, m.sumvec_SLD, axes=1), sums_LK[:, [K["n"]]])
    n_L, ff_L = sums_LK[:, K["n"]], sums_LK[:, K["ff"]]
    sst_L = ff_L - n_L * (np.nan_to_num(mu_LD) ** 2).sum(-1)
    kl_base = w_S @ kl_base_S
    kl_proj_L, kl_whole_L = w_S @ m.kl_proj_SL, w_S @ m.kl_whole_SL
    return {
        "r2_rank1": 1 - _ratio(sums_LK[:, K["ee"]], sst_L),
        "cos_rank1": _ratio(sums_LK[:, K["fr"]], np.sqrt(ff_L * sums_LK[:, K["rr"]])),
        "share_write": _ratio(sums_LK[:, K["pw"]], ff_L),
        "share_sae": _ratio(sums_LK[:, K["ps"]], ff_L),
        "kl_captured_proj": 1 - _ratio(kl_proj_L, kl_base),
        "kl_captured_whole": 1 - _ratio(kl_whole_L, kl_base),
        "kl_full_base": _ratio(kl_base, w_S @ tokens_S),
        "kl_full_rank1": _ratio(w_S @ kl_rank1_S, w_S @ tokens_S),
        "kl_captured_rank1": 1 - _ratio(w_S @ kl_rank1_S, kl_base),
        "rms_full": np.sqrt(_ratio(ff_L, n_L)),
        "rms_rank1": np.sqrt(_ratio(sums_LK[:, K["rr"]], n_L)),
    }


def _bootstrap(m: Measured, samples: int, seed: int):
    """(point metrics, list of resampled metrics) over m's sequences."""
    n = len(m.sums_SLK)
    tokens_S = m.sums_SLK[:, 0, K["n"]]
    kl_base_S = np.array([x.sum() for x in m.kl_base])
    kl_rank1_S = np.array([x.sum() for x in m.kl_rank1])
    args = (m, tokens_S, kl_base_S, kl_rank1_S)
    point = _metrics(np.ones(n), *args)
    rng = np.random.default_rng(seed)
    draws = [
        _metrics(np.bincount(rng.integers(0, n, n), minlength=n).astype(float), *args)
        for _ in range(samples if n > 1 else 0)
    ]
    return point, draws


def _interval(draws: list[dict], key: str, reduce=None):
    if not draws:
        return np.nan, np.nan
    vals = np.array([reduce(d[key]) if reduce else d[key] for d in draws])
    lo, hi = np.nanpercentile(vals, [2.5, 97.5], axis=0)
    return lo, hi


def _subset(m: Measured, keep: np.ndarray) -> Measured:
    idx = np.flatnonzero(keep)
    return Measured(
        m.sums_SLK[idx],
        m.sumvec_SLD[idx],
        m.kl_proj_SL[idx],
        m.kl_whole_SL[idx],
        [m.kl_base[i] for i in idx],
        [m.kl_rank1[i] for i in idx],
    )


def resample(texts: Sequence[Text], m: Measured, samples: int, seed: int) -> list:
    """Per source (first-seen order: train first): (source, its sequences'
    measurements, point metrics, bootstrap draws), what `layer_table` and
    `table3` both read, resampled once."""
    sources = np.array([t.source for t in texts])
    out = []
    for source in dict.fromkeys(sources):
        sub = _subset(m, sources == source)
        out.append((source, sub, *_bootstrap(sub, samples, seed)))
    return out


def layer_table(
    resampled: list, dims: dict[str, list[int]], d_model: int
) -> pl.DataFrame:
    """One row per source and layer: every layer metric with its interval,
    the subspace dimensions and their chance shares, RMS of Δh."""
    frames = []
    for source, sub, point, draws in resampled:
        n_layers = sub.sums_SLK.shape[1]
        cols = {
            "source": [source] * n_layers,
            "layer": np.arange(n_layers),
            "n_sequences": [len(sub.sums_SLK)] * n_layers,
            "n_tokens": sub.sums_SLK[:, :, K["n"]].sum(0).astype(np.int64),
        }
        for key in LAYER_METRICS:
            lo, hi = _interval(draws, key)
            cols |= {key: point[key], f"{key}_lo": lo, f"{key}_hi": hi}
        for kind in ("write", "sae"):
            cols[f"dim_{kind}"] = dims[kind]
            cols[f"chance_{kind}"] = np.asarray(dims[kind]) / d_model
        cols |= {"rms_full": point["rms_full"], "rms_rank1": point["rms_rank1"]}
        frames.append(pl.DataFrame(cols))
    return pl.concat(frames)


def table3(resampled: list, dims: dict[str, list[int]], d_model: int) -> pl.DataFrame:
    """Table 3: per source and metric (TABLE3_ROWS), value and 95% interval;
    per-layer metrics enter as their mean over layers."""
    rows = []
    for source, sub, point, draws in resampled:
        for key, what in TABLE3_ROWS:
            if key.startswith("chance_"):
                dims_L = np.asarray(dims[key.removeprefix("chance_")])
                value, lo, hi = float(np.mean(dims_L / d_model)), np.nan, np.nan
            else:
                reduce = np.nanmean if np.ndim(point[key]) else None
                value = float(reduce(point[key]) if reduce else point[key])
                lo, hi = _interval(draws, key, reduce)
            rows.append(
                {"source": source, "metric": key, "value": value,
                 "ci_low": float(lo), "ci_high": float(hi), "what": what,
                 "n_sequences": len(sub.sums_SLK),
                 "n_tokens": int(sub.sums_SLK[:, 0, K["n"]].sum())}
            )  # fmt: skip
    return pl.DataFrame(rows)


def token_table(texts: Sequence[Text], m: Measured) -> pl.DataFrame:
    """Per counted token: source, doc, pos, token_id, KL(full || base) and
    KL(full || rank-1) of its next-token distribution."""
    frames = []
    for s, text in enumerate(texts):
        pos = np.flatnonzero(text.scope_T.numpy())
        frames.append(
            pl.DataFrame(
                {"source": text.source, "doc": text.doc, "pos": pos,
                 "token_id": text.ids_T.numpy()[pos],
                 "kl_full_base": m.kl_base[s][pos],
                 "kl_full_rank1": m.kl_rank1[s][pos]},
                schema={"source": pl.Utf8, "doc": pl.Int64, "pos": pl.Int64,
                        "token_id": pl.Int64, "kl_full_base": pl.Float64,
                        "kl_full_rank1": pl.Float64},
            )
        )  # fmt: skip
    return pl.concat(frames)


def top_contexts(
    texts: Sequence[Text],
    m: Measured,
    decode: Callable[[list[int]], list[str]],
    k: int,
    width: int,
) -> pl.DataFrame:
    """The k counted tokens with the largest KL(full || rank-1), each with
    its window of ±width tokens (`tokens`), the KL per window token (`acts`,
    as in the max-activating examples' contexts) and KL(full || base) there."""
    found = [
        (float(kl[p]), s, p)
        for s, kl in enumerate(m.kl_rank1)
        for p in np.flatnonzero(texts[s].scope_T.numpy())
    ]
    found.sort(key=lambda x: -x[0])
    rows = []
    for rank, (value, s, p) in enumerate(found[:k]):
        ids = texts[s].ids_T.tolist()
        lo, hi = max(0, p - width), min(len(ids), p + width + 1)
        rows.append(
            {"rank": rank, "source": texts[s].source, "doc": texts[s].doc,
             "pos": int(p), "value": value, "kl_full_base": float(m.kl_base[s][p]),
             "tokens": decode(ids[lo:hi]),
             "acts": [float(x) for x in m.kl_rank1[s][lo:hi]],
             "center": int(p - lo)}
        )  # fmt: skip
    schema = {"rank": pl.Int64, "source": pl.Utf8, "doc": pl.Int64, "pos": pl.Int64,
              "value": pl.Float64, "kl_full_base": pl.Float64,
              "tokens": pl.List(pl.Utf8), "acts": pl.List(pl.Float32),
              "center": pl.Int32}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)
