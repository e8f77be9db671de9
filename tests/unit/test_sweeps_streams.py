"""sweeps.streams: the streamed correlation sums equal numpy's correlations
of the whole data (batches of any size, a mean far from zero, a constant
unit), and the within-module blocks agree whichever path computes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorascope.sweeps.matching import one_to_one, subspace_r
from lorascope.sweeps.streams import CrossMoments, GroupMoments


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (
        torch.randn(500, 5, generator=gen, dtype=torch.float64) * 0.01 + 1e6
    )  # unshifted float64 sums would lose the variance
    y = torch.randn(500, 7, generator=gen, dtype=torch.float64)
    y[:, 1] = x[:, 0] * -3 + 2  # exactly anti-correlated
    y[:, 4] = 7.0  # constant: no correlation defined
    return x, y


@pytest.mark.parametrize("batch", [1, 33, 500])
def test_cross_moments_equal_numpy(batch):
    x, y = _data()
    m = CrossMoments(5, 7)
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        m.update(xb, yb)
    want = np.corrcoef(x.numpy(), y.numpy(), rowvar=False)[:5, 5:]
    want[:, 4] = 0.0  # the constant unit: 0, never NaN
    np.testing.assert_allclose(m.corr(), want, atol=1e-9)
    assert m.corr()[0, 1] == pytest.approx(-1.0)
    np.testing.assert_allclose(m.std()[1], y.numpy().std(0), atol=1e-9)


@pytest.mark.parametrize("groups", [
    [np.arange(0, 3), np.arange(3, 6)],  # contiguous, equal ranks: batched
    [np.array([0, 2, 4]), np.array([1, 3, 5])],  # interleaved
    [np.arange(0, 2), np.arange(2, 6)],  # unequal ranks
])  # fmt: skip
def test_group_blocks_equal_numpy(groups):
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(300, 6, generator=gen) @ torch.randn(6, 6, generator=gen)
    g = GroupMoments(groups)
    for yb in y.split(64):
        g.update(yb)
    for i, idx in enumerate(groups):
        want = np.corrcoef(y.numpy()[:, idx].astype(np.float64), rowvar=False)
        np.testing.assert_allclose(g.corr(i), want, atol=1e-6)


def test_subspace_r_and_one_to_one():
    gen = np.random.default_rng(0)
    s = gen.normal(size=(2000, 1))
    rot = np.linalg.qr(gen.normal(size=(3, 3)))[0]
    other = np.hstack([s, gen.normal(size=(2000, 2))]) @ rot.T  # s spread over 3
    c = np.corrcoef(np.hstack([s, other]), rowvar=False)
    r = subspace_r(c[:1, 1:], [0], [c[1:, 1:]], [np.arange(3)])
    assert r[0] == pytest.approx(1.0, abs=1e-9)
    assert np.abs(c[0, 1:]).max() < 0.999
    match, value = one_to_one(np.array([[0.9, 0.8], [0.85, 0.1], [0.2, 0.3]]))
    # one to one: the best total (0.8 + 0.85), not each row's best
    assert match.tolist() == [1, 0, -1] and np.isnan(value[2])
