"""Explain/score split of each feature's contexts, stratified over activation
quantiles (delphi's `latents/samplers.py` protocol, on our contexts).

Used by rules autointerp_explain (the explainer sees only the explain split)
and autointerp_score (every scorer scores only the score split), so no
context an explanation was written from is ever scored.

A feature's contexts (contexts.parquet, strongest first) are its top
`activations.top_k` windows and the windows of a uniform random sample of
its activating tokens (`activations.sample_k`, column `source`: sample, or
both for a top-k token the sample drew too; lorascope.core.sample). The
sample is an unbiased view of the whole activation distribution, so its
values give the bin edges: `autointerp.split.n_quantiles` bins, each holding
an equal share of the feature's activating tokens (bin 0 the strongest);
every context, top-k or sampled, goes to the bin of its value, so the top-k
mostly falls in bin 0 and the lower bins hold sampled contexts. `n_score`
contexts, drawn evenly over the bins (seeded per feature), are held out for
scoring, never more than half, so the explainer always keeps the other half.
The explainer then sees either its split's strongest contexts
(`explain_from: top`, the paper's protocol) or `n_contexts` drawn evenly over
the bins (`quantiles`).

Without a sample (`activations.sample_k: 0`, or a feature whose sample is
empty after `activations.min_activation`) the bins are equal-count cuts of
the top-k alone, which span only the top of the distribution.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "quantile_bins",
    "value_bins",
    "spread",
    "split_contexts",
    "explain_pool",
]


def quantile_bins(n: int, n_quantiles: int) -> np.ndarray:
    """Bin (0 = strongest) of each of `n` contexts in rank order: equal counts."""
    n_q = max(1, min(n_quantiles, n))
    return np.concatenate(
        [np.full(len(c), i) for i, c in enumerate(np.array_split(np.arange(n), n_q))]
    ).astype(np.int64) if n else np.zeros(0, np.int64)  # fmt: skip


def value_bins(values: np.ndarray, sample: np.ndarray, n_quantiles: int) -> np.ndarray:
    """Bin (0 = strongest) of each value among `n_quantiles` bins that hold
    equal shares of `sample` (the feature's random sample of activations):
    a value at or above the sample's (1 - 1/n) quantile is in bin 0, one
    below its 1/n quantile in bin n - 1 (also below the sample's minimum)."""
    n_q = max(1, min(n_quantiles, len(sample)))
    cuts = np.quantile(np.asarray(sample, np.float64), np.arange(1, n_q) / n_q)
    # bin = n_q - 1 - (number of cuts at or below the value)
    below = np.searchsorted(cuts, np.asarray(values, np.float64), side="right")
    return (n_q - 1 - below).astype(np.int64)


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

    Both keep the rank order, each context tagged with its `quantile` bin
    (from the random sample's values when the feature has sampled contexts,
    else equal-count cuts of the top-k); the score split's order visits the
    bins in turn (see `spread`), so a scorer taking its first n contexts
    takes them over the quantiles.
    """
    drawn = [c["value"] for c in ctxs if c["source"] in ("sample", "both")]
    if drawn:
        values = np.array([c["value"] for c in ctxs], np.float64)
        bins = value_bins(values, np.array(drawn), split["n_quantiles"])
    else:
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
