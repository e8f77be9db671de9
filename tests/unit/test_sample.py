"""Streamed random sample of activating tokens (core.sample) equals brute force,
merges and resumes exactly, and does not depend on batch order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorascope.core.sample import StreamingSample, token_priority
from lorascope.core.topk import signed_features


def _stream(T=400, U=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(T, U, generator=g)
    doc = torch.repeat_interleave(torch.arange(8), T // 8)
    pos = torch.arange(T) % (T // 8)
    return signed_features(values, "both"), doc, pos


def _brute(values_TF, doc, pos, k, min_value=0.0):
    """Per feature: its k positive tokens of smallest priority, then > min_value."""
    prio = token_priority(doc, pos)
    rows = set()
    for f in range(values_TF.shape[1]):
        active = torch.nonzero(values_TF[:, f] > 0).flatten()
        chosen = active[torch.argsort(prio[active])[:k]]
        for t in chosen.tolist():
            if values_TF[t, f] > min_value:
                rows.add((f, int(doc[t]), int(pos[t]), float(values_TF[t, f])))
    return rows


def _rows(frame):
    return set(frame.select("feature", "doc", "pos", "value").iter_rows())


def _batched(values, doc, pos, k, seed):
    s = StreamingSample(values.shape[1], k)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(values.shape[0], generator=g)  # any token order
    start = 0
    while start < len(order):  # uneven batches, including size 1 and > k
        idx = order[start : start + int(torch.randint(1, 50, (1,), generator=g))]
        s.update(values[idx], doc[idx], pos[idx])
        start += len(idx)
    return s


@pytest.mark.parametrize("density", [1.0, 0.04])
@pytest.mark.parametrize("k", [1, 6, 500])
def test_streamed_equals_brute_force_in_any_order(k, density):
    """Dense features fill their sample from the first 4k tokens of a batch
    (in priority order); sparse ones (density 0.04) need the rest too."""
    values, doc, pos = _stream()
    keep = torch.rand(values.shape, generator=torch.Generator().manual_seed(3))
    values = torch.where(keep < density, values, torch.zeros(()))
    want = _brute(values, doc, pos, k)
    assert _rows(_batched(values, doc, pos, k, seed=1).to_frame()) == want
    assert _rows(_batched(values, doc, pos, k, seed=2).to_frame()) == want
    if k == 500:  # more slots than activating tokens: every one of them
        assert len(want) == int((values > 0).sum())


def test_merge_and_state_roundtrip_equal_one_pass():
    values, doc, pos = _stream()
    whole = StreamingSample(values.shape[1], 7)
    whole.update(values, doc, pos)
    a, b = StreamingSample(values.shape[1], 7), StreamingSample(values.shape[1], 7)
    a.update(values[:170], doc[:170], pos[:170])
    b.update(values[170:], doc[170:], pos[170:])
    a = StreamingSample.from_state_dict(a.state_dict("x."), "x.")
    b = StreamingSample.from_state_dict(b.state_dict(), "")
    b.merge(a)  # order of the merge does not matter either
    assert _rows(b.to_frame()) == _rows(whole.to_frame())
    assert set(a.state_dict("x.")) == {"x.priority", "x.values", "x.doc", "x.pos"}


def test_threshold_values_and_inactive_features():
    values, doc, pos = _stream()
    values[:, 3] = -1.0  # never fires
    s = StreamingSample(values.shape[1], 20)
    s.update(values, doc, pos)
    frame = s.to_frame()
    assert 3 not in frame["feature"].to_list()
    assert (frame["value"] > 0).all()
    assert _rows(s.to_frame(0.5)) == _brute(values, doc, pos, 20, 0.5)
    # the stored value is the token's activation, not its priority
    for f, d, p, v in _rows(frame):
        t = int(torch.nonzero((doc == d) & (pos == p))[0, 0])
        assert v == pytest.approx(float(values[t, f]))
    with pytest.raises(ValueError, match="expected 10"):
        s.update(torch.zeros(2, 4), doc[:2], pos[:2])
    with pytest.raises(ValueError, match="k >= 1"):
        StreamingSample(3, 0)


def test_sample_is_uniform_over_activations():
    """A feature active on every token with value = token index: its sample's
    mean index is the middle, not the top (what the top-k would give)."""
    T = 20000
    doc, pos = torch.arange(T) // 100, torch.arange(T) % 100
    values = (torch.arange(T, dtype=torch.float32) + 1)[:, None]
    s = StreamingSample(1, 400)
    s.update(values, doc, pos)
    v = s.to_frame()["value"].to_numpy()
    assert len(v) == 400 and abs(np.median(v) / T - 0.5) < 0.08
    assert v.min() < 0.1 * T and v.max() > 0.9 * T


def test_priorities_distinct_and_deterministic():
    doc = torch.arange(300).repeat_interleave(300)
    pos = torch.arange(300).repeat(300)
    p = token_priority(doc, pos)
    assert p.unique().numel() == p.numel() and int(p.min()) >= 0
    assert int(p.max()) < 2**62
    assert torch.equal(p, token_priority(doc.int(), pos.int()))
