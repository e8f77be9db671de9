"""Synthetic feature tables in the documented schema for the autointerp tests."""

from __future__ import annotations

import numpy as np
import polars as pl

VOCAB = [" the", " cat", " sat", " on", " mat", ",", ".", " 3", " 12", " +", " =",
         " Wait", " so", "\n", " x", " Paris", " and", " of", " to", " a"]  # fmt: skip


def make_tables(
    kind: str,
    n_features: int,
    n_ctx: int = 8,
    window: int = 9,
    token_of=None,
    seed: int = 0,
):
    """features, contexts frames; `token_of(f, r)` picks the max token (else random)."""
    rng = np.random.default_rng(seed)
    feats, ctxs = [], []
    for f in range(n_features):
        feats.append(
            {
                "feature": f,
                "kind": kind,
                "label": f"{kind}.{f}",
                "component": None,
                "layer": 0,
                "module": None,
                "neuron": None,
                "latent": None,
                "sign": 1,
                "max": 5.0,
                "mean": 0.1 * (f + 1),
                "frac_active": 0.5,
                "n_contexts": n_ctx,
                "few_contexts": False,
                "population": f"{kind} test population",
            }
        )
        for r in range(n_ctx):
            tokens = [VOCAB[i] for i in rng.integers(0, len(VOCAB), window)]
            center = window // 2
            if token_of is not None:
                tokens[center] = token_of(f, r)
            acts = rng.uniform(0, 0.5, window).astype(np.float32)
            acts[center] = 5.0 - 0.1 * r
            ctxs.append(
                {
                    "feature": f,
                    "rank": r,
                    "doc": int(rng.integers(0, 50)),
                    "pos": int(rng.integers(5, 500)),
                    "value": float(acts[center]),
                    "tokens": tokens,
                    "acts": acts.tolist(),
                    "center": center,
                    "source": "top",
                }
            )
    contexts = pl.DataFrame(ctxs).with_columns(
        pl.col("acts").cast(pl.List(pl.Float32)),
        pl.col("center").cast(pl.Int32),
        pl.col("value").cast(pl.Float32),
    )
    return pl.DataFrame(feats), contexts
