"""Explain/score split of each feature's contexts, stratified over activation
quantiles (delphi's `latents/samplers.py` protocol, on our contexts).

Used by rules autointerp_explain (the explainer sees only the explain split)
and autointerp_score (every scorer scores only the score split), so no
context an explanation was written from is ever scored.

A feature's contexts (contexts.parquet: its top `activations.top_k` windows,
strongest first) are cut into `autointerp.split.n_quantiles` bins of equal
count by activation (bin 0 the strongest). `n_score` of them, drawn evenly
over the bins (seeded per feature), are held out for scoring, never more
than half, so the explainer always keeps the other half. The explainer then
sees either its split's strongest contexts (`explain_from: top`, the
paper's protocol) or `n_contexts` drawn evenly over the bins (`quantiles`).

The bins are quantiles of the stored top-k, not of every activating token
(delphi's pool): contexts.parquet holds only the top-k windows, so a larger
`activations.top_k` widens the range the quantiles span (docs/ground-truth.md).
"""

from __future__ import annotations

import numpy as np

__all__ = ["quantile_bins", "spread", "split_contexts", "explain_pool"]


def quantile_bins(n: int, n_quantiles: int) -> np.ndarray:
    """Bin (0 = strongest) of each of `n` contexts in rank order: equal counts."""
    n_q = max(1, min(n_quantiles, n))
    return np.concatenate(
        [np.full(len(c), i) for i, c in enumerate(np.array_split(np.arange(n), n_q))]
    ).astype(np.int64) if n else np.zeros(0, np.int64)  # fmt: skip


def spread(bins: np.ndarray, rng) -> list[int]:
    """Indices in an order that visits the bins in turn (a random member of
    each, strongest bin first), so any prefix is spread over the quantiles."""
    per_bin = [
        list(rng.permutation(np.flatnonzero(bins == b)))
        for b in range(int(bins.max()) + 1 if len(bins) else 0)
    ]
    order = []
    while any(per_bin):
        for members in per_bin:
            if members:
                order.append(int(members.pop(0)))
    return order


def split_contexts(ctxs: list[dict], split: dict, seed: int, fid: int):
    """(explain, score) contexts of one feature; `ctxs` strongest first.

    Both keep the rank order, each context tagged with its `quantile` bin;
    the score split's order visits the bins in turn (see `spread`), so a
    scorer taking its first n contexts takes them over the quantiles.
    """
    bins = quantile_bins(len(ctxs), split["n_quantiles"])
    rng = np.random.default_rng([seed, fid, 1])
    n_score = min(split["n_score"], len(ctxs) // 2)
    held = spread(bins, rng)[:n_score]
    tagged = [{**c, "quantile": int(b)} for c, b in zip(ctxs, bins, strict=True)]
    keep = sorted(set(range(len(ctxs))) - set(held))
    return [tagged[i] for i in keep], [tagged[i] for i in held]


def explain_pool(explain: list[dict], section: dict, seed: int, fid: int):
    """The explain split as the explainer's example selection reads it:
    strongest first (`top`), or `n_contexts` spread over the quantile bins
    and then put back in rank order (`quantiles`)."""
    if section["split"]["explain_from"] == "top" or not explain:
        return explain
    bins = np.array([c["quantile"] for c in explain])
    rng = np.random.default_rng([seed, fid, 2])
    picked = sorted(spread(bins, rng)[: section["n_contexts"]])
    return [explain[i] for i in picked]
