"""The explain/score split's building blocks against their definitions
(autointerp/split.py): equal-count quantile bins, the round-robin order over
them, and the explainer's pool. Kept apart from test_autointerp_scorers.py's
split tests (from mutation testing: `make mutation SESSIONS=autointerp_split`)."""

import numpy as np

from lorascope.autointerp.split import (
    explain_pool,
    quantile_bins,
    split_contexts,
    spread,
    value_bins,
)


def _ctxs(n):
    """n top-k contexts, strongest first (no random sample: equal-count bins)."""
    return [
        {"rank": i, "value": 10.0 - i, "source": "top", "tokens": [f"t{i}"],
         "acts": [10.0 - i]}
        for i in range(n)
    ]  # fmt: skip


def test_quantile_bins_are_equal_count_integers_at_most_one_per_context():
    assert quantile_bins(7, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert quantile_bins(5, 1).tolist() == [0] * 5  # one bin: all together
    assert quantile_bins(3, 10).tolist() == [0, 1, 2]  # never an empty bin
    for n, q in ((7, 3), (0, 4), (1, 1)):
        bins = quantile_bins(n, q)
        assert bins.dtype == np.int64 and len(bins) == n


def test_spread_visits_the_bins_in_turn_each_index_once():
    bins = np.array([0, 0, 0, 1, 2, 2])
    for seed in range(4):
        order = spread(bins, np.random.default_rng(seed))
        assert sorted(order) == list(range(6))
        # bin 0, 1, 2, then the bins that still have members, in turn
        assert [int(bins[i]) for i in order] == [0, 1, 2, 0, 2, 0]
    assert spread(np.zeros(0, np.int64), np.random.default_rng(0)) == []
    # a random member of each bin: some seed picks another first
    firsts = {spread(bins, np.random.default_rng(s))[0] for s in range(20)}
    assert firsts == {0, 1, 2}


def test_split_is_seeded_by_run_seed_and_feature():
    split = {"n_quantiles": 2, "n_score": 3, "explain_from": "quantiles"}
    ctxs = _ctxs(12)
    held = {
        (seed, fid): [c["rank"] for c in split_contexts(ctxs, split, seed, fid)[1]]
        for seed in range(3)
        for fid in range(3)
    }
    assert len(set(map(tuple, held.values()))) > 1
    assert held[0, 1] != held[1, 1] or held[0, 2] != held[1, 2]  # the seed counts
    assert held[1, 0] != held[1, 1] or held[1, 0] != held[1, 2]  # the feature counts
    empty = split_contexts([], split, 0, 0)
    assert empty == ([], [])


def test_explain_pool_spreads_n_contexts_over_the_bins_in_rank_order():
    explain = [{**c, "quantile": c["rank"] // 4} for c in _ctxs(16)]
    section = {"n_contexts": 5, "split": {"explain_from": "quantiles"}}
    for fid in range(3):
        pool = explain_pool(explain, section, seed=0, fid=fid)
        ranks = [c["rank"] for c in pool]
        assert len(ranks) == 5 and ranks == sorted(ranks)  # back in rank order
        # 5 over 4 bins: every bin, one of them twice
        assert sorted({r // 4 for r in ranks}) == [0, 1, 2, 3]
    pools = {
        tuple(c["rank"] for c in explain_pool(explain, section, seed, 0))
        for seed in range(6)
    }
    assert len(pools) > 1  # seeded: the same call, the same pool
    assert explain_pool(explain, section, 3, 1) == explain_pool(explain, section, 3, 1)
    top = {"n_contexts": 5, "split": {"explain_from": "top"}}
    assert explain_pool(explain, top, 0, 0) == explain  # all, strongest first
    assert explain_pool([], section, 0, 0) == []


def test_value_bins_put_a_value_at_a_cut_in_the_stronger_bin():
    # sample [1, 2, 3] in two bins: the cut is its median, 2.0; "a value at or
    # above the (1 - 1/n) quantile is in bin 0"
    assert value_bins(
        np.array([2.0, 1.999, 3.0]), np.array([1.0, 2.0, 3.0]), 2
    ).tolist() == [0, 1, 0]


def test_value_bins_of_a_one_token_sample_are_one_bin():
    # one sampled value cannot cut anything: every context is in bin 0
    assert value_bins(np.array([0.1, 5.0]), np.array([3.0]), 5).tolist() == [0, 0]
    assert value_bins(np.array([0.1, 5.0]), np.array([1.0, 3.0]), 1).tolist() == [0, 0]


def test_a_top_k_token_the_sample_drew_too_counts_towards_the_bin_edges():
    """`both`: a top-k context whose token the sample also drew is one of
    the sampled values; leaving it out would shift the cuts."""
    split = {"n_quantiles": 2, "n_score": 0, "explain_from": "quantiles"}
    ctxs = [
        {"rank": r, "value": v, "source": s, "tokens": ["t"], "acts": [v]}
        for r, (v, s) in enumerate(
            [(10.0, "both"), (1.0, "sample"), (0.5, "sample"), (0.4, "sample")]
        )
    ]
    explain, held = split_contexts(ctxs, split, seed=0, fid=0)
    assert held == []
    # drawn values 10, 1, 0.5, 0.4: the cut is 0.75, so 0.5 is in the weak bin
    # (without the `both` value it would be the cut itself, in bin 0)
    assert [c["quantile"] for c in explain] == [0, 0, 1, 1]
