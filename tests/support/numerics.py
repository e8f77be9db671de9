"""Tolerances for numerical equality tests, derived from the computation.

Two evaluations of one computation that differ only in the order of their
additions (a batched forward vs one row, prefix reuse vs a full pass, a hook
vs edited weights) agree only up to rounding, and how they round depends on
the CPU's kernels (AVX2 and AVX-512 sum float32 dot products in different
orders). So a tolerance must come from the arithmetic, not from one machine:

- One length-n dot product computed in floating point is off by at most
  gamma_n * sum|x_i y_i| with gamma_n ~ n * u, u the unit roundoff
  (Higham, "Accuracy and Stability of Numerical Algorithms", §3.1). Two
  summation orders can each be off that much, in opposite directions: 2 n u.
- A forward chains `depth` such reductions; to first order their relative
  errors add, each possibly amplified by what follows (softmax, norms):
  `amplification` bounds that factor for the tiny random models of the tests.

The tests that compare paths therefore run the tiny models in float64, where
this bound is ~1e-11 relative while any real bug (a wrong mask, a missing
scale) moves outputs by ~1e-1: the test keeps its power on every CPU.
"""

from __future__ import annotations

import torch


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def reorder_tol(
    dtype: torch.dtype,
    *,
    n: int,
    depth: int,
    scale: float = 1.0,
    amplification: float = 100.0,
) -> dict[str, float]:
    """rtol/atol for two summation orders of one computation (see module doc).

    n: the longest reduction (hidden size, vocabulary, sequence length);
    depth: how many reductions are chained; scale: typical |value| compared,
    so values near zero get an absolute bound of the same size.
    """
    rel = 2 * amplification * depth * n * unit_roundoff(dtype)
    return {"rtol": rel, "atol": rel * float(scale)}


def rounding_tol(
    dtype: torch.dtype, *, scale: float, upstream: dict | None = None
) -> dict[str, float]:
    """rtol/atol for values computed in higher precision and then stored as
    `dtype` (e.g. float64 scalars in a float32 or bfloat16 shard): two values
    that differ by `upstream` each round by at most u relative."""
    rel = 2 * unit_roundoff(dtype) + (upstream or {}).get("rtol", 0.0)
    return {"rtol": rel, "atol": rel * float(scale)}
