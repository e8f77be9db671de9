"""Streamed top-k and feature statistics equal brute force over stored values."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from numerics import rounding_tol

from lorascope.core.topk import (
    FeatureStats,
    StreamingTopK,
    feature_units,
    signed_features,
)


def _stream(T=300, U=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(T, U, generator=g)
    doc = torch.repeat_interleave(torch.arange(10), T // 10)
    pos = torch.arange(T) % (T // 10)
    return values, doc, pos


def _brute(values_TF, doc, pos, k, min_value=0.0):
    """Per feature, the k largest values above min_value (real activations)."""
    rows = []
    for f in range(values_TF.shape[1]):
        order = torch.argsort(values_TF[:, f], descending=True)[:k]
        order = order[values_TF[order, f] > min_value]
        for r, t in enumerate(order.tolist()):
            rows.append((f, r, int(doc[t]), int(pos[t]), float(values_TF[t, f])))
    return rows


def _rows(frame: pl.DataFrame):
    return [
        (f, r, d, p, pytest.approx(v, abs=1e-6))
        for f, r, d, p, v in frame.select("feature", "rank", "doc", "pos", "value")
        .sort("feature", "rank")
        .iter_rows()
    ]


@pytest.mark.parametrize("polarity", ["both", "abs", "pos"])
@pytest.mark.parametrize("k", [1, 7, 64])
def test_streamed_equals_brute_force(polarity, k):
    values, doc, pos = _stream()
    feats = signed_features(values, polarity)
    top = StreamingTopK(feats.shape[1], k)
    g = torch.Generator().manual_seed(1)
    start = 0
    while start < values.shape[0]:  # uneven batches, including size 1 and > k
        n = int(torch.randint(1, 40, (1,), generator=g))
        sl = slice(start, start + n)
        top.update(signed_features(values[sl], polarity), doc[sl], pos[sl])
        start += n
    assert _rows(top.to_frame()) == _brute(feats, doc, pos, k)


def test_polarity_layout():
    v = torch.tensor([[1.0, -2.0]])
    assert signed_features(v, "both").tolist() == [[1.0, -1.0, -2.0, 2.0]]
    assert signed_features(v, "abs").tolist() == [[1.0, 2.0]]
    unit, sign = feature_units(2, "both")
    assert unit.tolist() == [0, 0, 1, 1] and sign.tolist() == [1, -1, 1, -1]
    with pytest.raises(ValueError, match="polarity"):
        signed_features(v, "neg")


def test_merge_and_state_roundtrip_equal_single_stream():
    values, doc, pos = _stream(U=4)
    whole = StreamingTopK(4, 5)
    whole.update(values, doc, pos)
    a, b = StreamingTopK(4, 5), StreamingTopK(4, 5)
    a.update(values[:130], doc[:130], pos[:130])
    b.update(values[130:], doc[130:], pos[130:])
    a = StreamingTopK.from_state_dict(a.state_dict("x."), "x.")
    a.merge(b)
    assert _rows(a.to_frame()) == _rows(whole.to_frame())


def test_unfilled_slots_are_dropped_and_shapes_checked():
    top = StreamingTopK(3, 10)
    top.update(torch.rand(4, 3) + 0.1, torch.zeros(4), torch.arange(4))
    frame = top.to_frame()
    assert frame.height == 12 and frame["rank"].max() == 3
    with pytest.raises(ValueError, match="expected 3"):
        top.update(torch.randn(2, 5), torch.zeros(2), torch.arange(2))


def test_feature_stats_match_direct_computation():
    values, _, _ = _stream(U=5)
    stats = FeatureStats(5)
    for chunk in values.split(37):
        stats.update(chunk)
    other = FeatureStats.from_state_dict(stats.state_dict("s."), "s.")
    frame = other.to_frame()
    # max and counts are exact; the mean is summed in float64 and stored as
    # float32 (one rounding, tests/support/numerics.py).
    np.testing.assert_array_equal(frame["max"], values.max(0).values.numpy())
    tol = rounding_tol(torch.float32, scale=values.abs().max())
    np.testing.assert_allclose(frame["mean"], values.double().mean(0).numpy(), **tol)
    frac = (values > 0).double().mean(0).numpy()
    np.testing.assert_allclose(
        frame["frac_active"], frac, **rounding_tol(torch.float32, scale=1.0)
    )
    stats.update(torch.full((1, 5), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        stats.to_frame()


@pytest.mark.parametrize("polarity", ["both", "abs", "pos"])
def test_contexts_windows_match_streamed_topk(polarity):
    from lorascope.core.contexts import build_contexts

    g = torch.Generator().manual_seed(5)
    docs = {d: torch.randn(int(n), 3, generator=g) for d, n in zip(
        [7, 3, 9], [6, 11, 4], strict=True)}  # fmt: skip
    F = signed_features(docs[7], polarity).shape[1]
    top = StreamingTopK(F, 4)
    for d, v in docs.items():
        top.update(signed_features(v, polarity), torch.full((len(v),), d),
                   torch.arange(len(v)))  # fmt: skip
    token_ids = {d: list(range(100, 100 + len(v))) for d, v in docs.items()}
    ctx = build_contexts(
        top.to_frame(), token_ids, lambda ids: [str(i) for i in ids],
        lambda ds: ((d, docs[d]) for d in reversed(ds)), polarity, 2,
    )  # fmt: skip
    assert ctx.height == F * 4
    for row in ctx.iter_rows(named=True):
        feats = signed_features(docs[row["doc"]], polarity)[:, row["feature"]]
        lo = row["pos"] - row["center"]
        want = feats[lo : lo + len(row["acts"])].tolist()
        assert row["acts"] == pytest.approx(want, abs=1e-6)
        assert row["acts"][row["center"]] == pytest.approx(row["value"], abs=1e-6)
        assert row["tokens"][row["center"]] == str(100 + row["pos"])
        assert 0 <= row["center"] <= 2 and len(row["acts"]) <= 5


def test_a_feature_firing_three_times_has_exactly_three_rows():
    """The bug: k = 64 kept fillers (zero or negative values at arbitrary
    positions) for a feature that fired fewer than 64 times."""
    T = 500
    values = torch.zeros(T, 3)
    fired = torch.tensor([17, 230, 481])
    values[fired, 0] = torch.tensor([0.5, 2.0, 1.0])  # fires 3 times
    values[:, 1] = -torch.rand(T) - 0.1  # never positive
    values[:, 2] = torch.rand(T) + 0.1  # fires everywhere
    doc, pos = torch.zeros(T, dtype=torch.long), torch.arange(T)
    top = StreamingTopK(3, 64)
    for sl in torch.arange(T).split(97):
        top.update(values[sl], doc[sl], pos[sl])
    frame = top.to_frame()
    f0 = frame.filter(pl.col("feature") == 0).sort("rank")
    assert f0["pos"].to_list() == [230, 481, 17]
    assert f0["rank"].to_list() == [0, 1, 2]
    assert frame.filter(pl.col("feature") == 1).height == 0
    assert frame.filter(pl.col("feature") == 2).height == 64
    # A threshold: only values strictly above it; the `both` view of a signed
    # unit keeps its negative side as a feature of its own.
    assert top.to_frame(min_value=0.9).filter(pl.col("feature") == 0)[
        "pos"
    ].to_list() == [230, 481]
    both = signed_features(values[:, 1:2], "both")
    top2 = StreamingTopK(2, 8)
    top2.update(both, doc, pos)
    assert top2.to_frame()["feature"].unique().to_list() == [1]


def test_dominant_sign_subset_and_marks():
    from lorascope.core.contexts import (
        dominant_features,
        finish_features,
        subset_features,
    )

    feats = pl.DataFrame(
        {"feature": [0, 1, 2, 3, 4, 5], "max": [2.0, 1.0, 0.5, 3.0, 1.0, 1.0]}
    )
    # unit 0: + wins; unit 1: - wins; unit 2: a tie goes to +
    assert dominant_features(feats).tolist() == [0, 3, 4]
    topk = pl.DataFrame({"feature": [0, 0, 3, 5], "rank": [0, 1, 0, 0]})
    sub_f, sub_t = subset_features([0, 3, 4], feats, topk)
    assert sub_f["feature"].to_list() == [0, 1, 2]
    assert sub_f["max"].to_list() == [2.0, 3.0, 1.0]
    assert sub_t["feature"].to_list() == [0, 0, 1]  # feature 5's row dropped
    marked = finish_features(sub_f, sub_t, 2, "pop")
    assert marked["n_contexts"].to_list() == [2, 1, 0]
    assert marked["few_contexts"].to_list() == [False, True, True]
    assert set(marked["population"]) == {"pop"}
    with pytest.raises(ValueError, match="ascending"):
        subset_features([3, 0], feats)
