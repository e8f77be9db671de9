"""Fuzzing and simulation scorers (offline and through the fake LLM server),
the quantile-stratified explain/score split, malformed replies counted as
failures, and the judge's key checked before any job."""

import json
import re

import numpy as np
import polars as pl
import pytest
import yaml
from autointerp_data import make_tables
from fake_llm_server import FakeLLMServer

from lorascope.autointerp.explain import explain_kind
from lorascope.autointerp.prompts import ParseError, parse_simulation
from lorascope.autointerp.scorers import (
    FUZZING,
    SIMULATION,
    active_positions,
    correlation,
    fuzz_windows,
    simulation_windows,
)
from lorascope.autointerp.scoring import score_kind
from lorascope.autointerp.split import (
    explain_pool,
    quantile_bins,
    split_contexts,
    value_bins,
)
from lorascope.autointerp.summary import score_means
from lorascope.core.config import validate
from lorascope.core.feature_tables import contexts_by_feature
from lorascope.workflow.environment import check_environment

NUMS = [" 3", " 12", " 7", " 45", " 8", " 99", " 1", " 60"]


def _section(**over):
    cfg = yaml.safe_load(open("config/config.yaml"))
    cfg.setdefault("autointerp", {}).update(over)
    return validate(cfg)["autointerp"]


def _tables(n=4, n_ctx=20):
    """Feature f fires on " Wait" (f even) or on a number (f odd)."""
    tok = lambda f, r: " Wait" if f % 2 == 0 else NUMS[r % 8]  # noqa: E731
    return make_tables("lora", n, n_ctx=n_ctx, token_of=tok, seed=3)


def _ctxs(n):
    return [{"doc": i, "pos": i, "rank": i, "tokens": [f"t{i}"], "acts": [10.0 - i],
             "value": 10.0 - i, "center": 0, "source": "top"}
            for i in range(n)]  # fmt: skip


def _with_sample(n_top=20, n_sample=40):
    """A feature whose top-k spans 100..81 and whose random sample of 40
    activating tokens spans 80..2 (2 of them also top-k: source both)."""
    top = [{"doc": i, "pos": 0, "rank": i, "tokens": [f"t{i}"], "acts": [100.0 - i],
            "value": 100.0 - i, "center": 0, "source": "top"}
           for i in range(n_top)]  # fmt: skip
    top[3]["source"] = top[7]["source"] = "both"
    low = [{"doc": 1000 + j, "pos": 0, "rank": n_top + j, "tokens": [f"s{j}"],
            "acts": [80.0 - 2 * j], "value": 80.0 - 2 * j, "center": 0,
            "source": "sample"} for j in range(n_sample - 2)]  # fmt: skip
    return top + low


# -- the split -------------------------------------------------------------


def test_split_is_disjoint_stratified_seeded_and_keeps_half_for_the_explainer():
    split = {"n_quantiles": 4, "n_score": 8, "explain_from": "quantiles"}
    ctxs = _ctxs(40)
    explain, score = split_contexts(ctxs, split, seed=0, fid=3)
    ranks_e, ranks_s = [c["rank"] for c in explain], [c["rank"] for c in score]
    assert not set(ranks_e) & set(ranks_s)
    assert sorted(ranks_e + ranks_s) == list(range(40))
    assert ranks_e == sorted(ranks_e)  # the explain split keeps rank order
    # 8 held out over 4 equal-count bins of 10: two per bin, the bins in turn
    assert [c["quantile"] for c in score] == [0, 1, 2, 3] * 2
    assert [r // 10 for r in ranks_s] == [0, 1, 2, 3] * 2
    assert split_contexts(ctxs, split, 0, 3) == (explain, score)
    assert split_contexts(ctxs, split, 0, 4)[1] != score  # seeded per feature
    # never more than half held out: the explainer keeps the rest
    few = split_contexts(_ctxs(5), split, 0, 3)
    assert (len(few[0]), len(few[1])) == (3, 2)
    assert list(quantile_bins(5, 4)) == [0, 0, 1, 2, 3]
    assert list(quantile_bins(2, 4)) == [0, 1]


def test_bins_come_from_the_random_sample_and_reach_below_the_top_k():
    """With sampled contexts the bins are quantiles of the sample (the whole
    activation distribution): the top-k falls into the strongest bin, the
    held-out contexts come from every bin, low ones included."""
    split = {"n_quantiles": 4, "n_score": 8, "explain_from": "quantiles"}
    ctxs = _with_sample()
    explain, score = split_contexts(ctxs, split, seed=0, fid=3)
    key = lambda c: (c["doc"], c["pos"])  # noqa: E731
    assert not {key(c) for c in explain} & {key(c) for c in score}
    assert len(explain) + len(score) == len(ctxs)
    by_rank = {c["rank"]: c["quantile"] for c in explain + score}
    assert {by_rank[r] for r in range(20)} == {0}  # the whole top-k: bin 0
    assert [c["quantile"] for c in score] == [0, 1, 2, 3] * 2
    # the lowest bin lies far below the top-k's weakest value (81)
    assert max(c["value"] for c in score if c["quantile"] == 3) < 25
    # before (no sample): equal-count bins of the top-k alone, all >= 81
    top_only = [{**c, "source": "top"} for c in ctxs[:20]]
    assert min(c["value"] for c in split_contexts(top_only, split, 0, 3)[1]) >= 81
    assert split_contexts(ctxs, split, 0, 3) == (explain, score)  # seeded
    assert split_contexts(ctxs, split, 0, 4)[1] != score
    # the explainer's `quantiles` pool spreads over the bins, `top` is strongest
    sec = {"split": split, "n_contexts": 8}
    pool = explain_pool(explain, sec, 0, 3)
    assert {c["quantile"] for c in pool} == {0, 1, 2, 3}
    sec_top = {"split": {**split, "explain_from": "top"}, "n_contexts": 8}
    top_pool = explain_pool(explain, sec_top, 0, 3)[:8]
    assert [c["rank"] for c in top_pool] == sorted(c["rank"] for c in top_pool)
    assert all(c["quantile"] == 0 for c in top_pool)


def test_value_bins_equal_shares_of_the_sample():
    sample = np.arange(100, dtype=float)
    bins = value_bins(sample, sample, 4)
    assert np.bincount(bins).tolist() == [25, 25, 25, 25]
    assert value_bins(np.array([1e9, -5.0]), sample, 4).tolist() == [0, 3]
    assert value_bins(np.array([3.0]), np.array([3.0]), 5).tolist() == [0]


def test_explainer_never_sees_a_context_that_is_scored(tmp_path, monkeypatch):
    """Through the fake server: every window shown to the explainer is from
    the explain split, none from the score split; `quantiles` spreads the
    shown examples over the bins, `top` shows the strongest."""
    monkeypatch.setenv("FAKE_LLM_KEY", "k")
    feats, ctx = _tables(n=1, n_ctx=24)
    own = contexts_by_feature(ctx)[0]
    text = {c["rank"]: "".join(c["tokens"]).replace("\n", "\\n") for c in own}
    answer = '{"explanation": "x", "classification": 1}'
    for explain_from in ("quantiles", "top"):
        split = {"n_quantiles": 4, "n_score": 8, "explain_from": explain_from}
        with FakeLLMServer(lambda p: answer) as server:
            url, key = server.openai_url, "FAKE_LLM_KEY"
            sec = _section(provider="openai", model="m", base_url=url,
                           api_key_env=key, n_contexts=6, split=split)  # fmt: skip
            explain_kind(feats, ctx, sec, "t", tmp_path / f"{explain_from}.db", "lora")
            (prompt,) = server.prompts()
        shown = prompt.split("<examples>")[1]
        shown_ranks = {r for r, t in text.items() if f"<example>\n{t}\n" in shown}
        held = {c["rank"] for c in split_contexts(own, split, sec["seed"], 0)[1]}
        assert len(shown_ranks) == 6 and not shown_ranks & held
        if explain_from == "top":
            assert shown_ranks == set(sorted(set(range(24)) - held)[:6])
        else:  # 6 of the 16 left, over the 4 bins of 6 contexts each
            assert {r // 6 for r in shown_ranks} == {0, 1, 2, 3}


# -- fuzzing -----------------------------------------------------------------


def test_fuzz_windows_mark_active_tokens_and_matched_decoys():
    acts_true = [0.1, 2.0, 0.2, 10.0, 3.5, 0.0, 0.1]  # active >= 3.0: 3, 4
    ctxs = [
        {"tokens": [f"a{i}" for i in range(7)], "acts": acts_true, "center": 3}
        if k % 2 == 0
        else {"tokens": [f"d{k}{i}" for i in range(7)],
              "acts": [0.0, 0.0, 9.0, 0.1, 0.0, 4.0, 0.0], "center": 2}
        for k in range(6)
    ]  # fmt: skip
    assert active_positions(acts_true, 0.3) == [3, 4]
    assert active_positions([0.0, -1.0], 0.3) == []  # never fired: nothing active
    cfg = {"n_examples": 6, "threshold": 0.3}
    win = fuzz_windows(ctxs, cfg, None, seed=0, fid=1)
    true = [w for w in win if w["label"]]
    decoys = [w for w in win if not w["label"]]
    assert len(true) == len(decoys) == 3
    assert all(w["marked"] == [3, 4] for w in true)
    for w in decoys:  # ceil(mean 2 active) = 2 random inactive tokens
        assert len(w["marked"]) == 2 and not {2, 5} & set(w["marked"])
    assert fuzz_windows(ctxs, cfg, None, seed=0, fid=1) == win
    assert fuzz_windows(ctxs, {**cfg, "n_examples": 3}, None, 0, 1) != win
    # a window cut to 1 token either side of its centre
    cut = fuzz_windows(ctxs[:1], cfg, 1, 0, 1)[0]
    assert cut["tokens"] == ["a2", "a3", "a4"] and cut["marked"] == [1, 2]


def test_offline_fuzzing_and_simulation_follow_their_definitions(tmp_path):
    """Scores recomputed from the windows the scorer builds: balanced accuracy
    of 'every marked token is named'; Pearson r of 10-on-named-token against
    the true activations clipped at 0."""
    from lorascope.autointerp.offline import judge_offline

    sec = _section()
    feats, ctx = _tables()
    expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path, "lora")
    assert expl["explanation"][0].startswith('token "Wait"')
    scores, usage = score_kind(expl, ctx, sec, "t", tmp_path, "lora")
    assert usage == []
    own = contexts_by_feature(ctx)
    for row in scores.iter_rows(named=True):
        f = row["feature"]
        held = split_contexts(own[f], sec["split"], sec["seed"], f)[1]
        assert row["n_scored"] == len(held) == sec["split"]["n_score"]
        text = expl["explanation"][f]
        fz, sim = sec["fuzzing"], sec["simulation"]
        fw = fuzz_windows(held, fz, fz["window"], sec["seed"], f)
        pred = [all(judge_offline(text, [w["tokens"][i] for i in w["marked"]]))
                for w in fw]  # fmt: skip
        tpr = np.mean([p for p, w in zip(pred, fw, strict=True) if w["label"]])
        tnr = np.mean([not p for p, w in zip(pred, fw, strict=True) if not w["label"]])
        assert row["fuzzing"] == pytest.approx((tpr + tnr) / 2)
        assert row["fuzzing_n"] == len(fw) and row["fuzzing_status"] == "ok"
        sw = simulation_windows(held, sim, sim["window"])
        truth = np.concatenate([w["acts"] for w in sw])
        guess = np.concatenate([[10.0 * h for h in judge_offline(text, w["tokens"])]
                                for w in sw])  # fmt: skip
        assert min(truth) >= 0 and row["simulation_tokens"] == len(truth)
        assert row["simulation"] == pytest.approx(np.corrcoef(truth, guess)[0, 1])
    # "Wait" features: the explanation names the centre token exactly
    assert scores["fuzzing"][0] == 1.0 and scores["simulation"][0] > 0.8


def test_simulation_with_constant_prediction_is_undefined_not_zero(tmp_path):
    sec = _section()
    feats, ctx = _tables(n=1)
    expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path, "lora")
    expl = expl.with_columns(explanation=pl.lit('token "nowhere"'))
    row = score_kind(expl, ctx, sec, "t", tmp_path, "lora")[0].row(0, named=True)
    assert row["simulation"] is None and row["simulation_status"] == "undefined"
    assert row["fuzzing"] == 0.5  # no window accepted: chance, a real score
    assert correlation([[1.0, 2.0]], [[3.0, 3.0]]) is None
    assert correlation([[1.0, 2.0, 0.0]], [[2.0, 4.0, 0.0]]) == pytest.approx(1.0)


def test_scorers_not_configured_are_not_run(tmp_path):
    sec = _section(scorers=["simulation"])
    feats, ctx = _tables(n=2)
    expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path, "lora")
    scores = score_kind(expl, ctx, sec, "t", tmp_path, "lora")[0]
    assert set(scores["status"]) == set(scores["fuzzing_status"]) == {"not_run"}
    assert scores["balanced_accuracy"].null_count() == scores["fuzzing"].null_count()
    assert scores["simulation"].is_not_null().all()
    means = score_means({"lora": scores}, 50, 0)
    det = means.filter(pl.col("scorer") == "detection").row(0, named=True)
    assert (det["n_not_run"], det["n_ok"], det["mean"]) == (2, 0, None)


# -- through the fake LLM server -------------------------------------------


def _judge(prompt, malformed=()):
    """Fuzzing: accept windows whose marks hold ' Wait'; simulation: 10 on
    ' Wait'. `malformed` names the scorers that answer badly instead."""
    if "every marked" in prompt:
        if "fuzzing" in malformed:
            return "I think windows 1 and 2"
        lines = re.findall(r"^(\d+)\. (.*)$", prompt, re.M)
        return json.dumps({"correct": [int(k) for k, t in lines if "<< Wait>>" in t]})
    if "predict how strongly" in prompt:
        windows = []
        for line in prompt.splitlines():
            if line.startswith("Window "):
                windows.append([])
            elif windows and re.match(r"^\d+\t", line):
                token = json.loads(line.split("\t", 1)[1])
                windows[-1].append(10 if token == " Wait" else 0)
        if "simulation" in malformed:  # one number short in the last window
            windows[-1] = windows[-1][:-1]
        return json.dumps({"activations": windows})
    if "which windows it fires on" in prompt:
        return '{"activating": [1]}'
    return '{"explanation": "the Wait token", "classification": 0}'


def test_llm_fuzzing_and_simulation_against_the_fake_server(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "k")
    feats, ctx = _tables(n=2)
    with FakeLLMServer(_judge) as server:
        sec = _section(provider="openai", model="m", base_url=server.openai_url,
                       api_key_env="FAKE_LLM_KEY")  # fmt: skip
        db = tmp_path / "c.db"
        expl, _ = explain_kind(feats, ctx, sec, "t", db, "lora")
        scores, usage = score_kind(expl, ctx, sec, "t", db, "lora")
        prompts = server.prompts()
        n = len(server.requests)
        assert score_kind(expl, ctx, sec, "t", db, "lora")[0].equals(scores)
        assert len(server.requests) == n  # a rerun is answered by the cache
    fuzz = [p for p in prompts if "every marked" in p]
    sim = [p for p in prompts if "predict how strongly" in p]
    assert len(fuzz) == len(sim) == 2  # one call per feature per scorer
    # Requests run concurrently: either feature's prompt may come first.
    assert all("the Wait token" in p for p in fuzz)
    assert any("<< Wait>>" in p for p in fuzz)  # feature 0's active tokens marked
    assert {u["step"] for u in usage} == {"score_lora", "fuzz_lora", "simulate_lora"}
    r0, r1 = scores.row(0, named=True), scores.row(1, named=True)
    assert set(scores["fuzzing_status"]) == set(scores["simulation_status"]) == {"ok"}
    assert set(scores["judge"]) == {"openai:m"}
    # feature 0 fires on " Wait": the judge's rule is the truth there
    assert r0["fuzzing"] == 1.0 and r0["simulation"] > 0.8
    assert r1["fuzzing"] == 0.5 and r1["fuzzing_raw"].startswith('{"correct"')


def test_malformed_replies_are_counted_failures_never_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "k")
    feats, ctx = _tables(n=2)
    bad = ("fuzzing", "simulation")
    with FakeLLMServer(lambda p: _judge(p, bad)) as server:
        sec = _section(provider="openai", model="m", base_url=server.openai_url,
                       api_key_env="FAKE_LLM_KEY", parse_retries=1)  # fmt: skip
        expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path / "c.db", "lora")
        scores, _ = score_kind(expl, ctx, sec, "t", tmp_path / "c.db", "lora")
        # each feature asked twice (parse_retries 1) per malformed scorer
        asked = [p for p in server.prompts() if "every marked" in p]
    assert len(asked) == 4
    for scorer in bad:
        assert set(scores[f"{scorer}_status"]) == {"failed"}
        assert scores[scorer].null_count() == 2
        assert all("malformed reply after 2 attempts" in e
                   for e in scores[f"{scorer}_error"])  # fmt: skip
    assert scores["fuzzing_raw"][0] == "I think windows 1 and 2"
    assert "window 5: need 9 numbers" in scores["simulation_error"][0]
    assert set(scores["status"]) == {"ok"}  # detection answered well
    means = score_means({"lora": scores}, 50, 0)
    for scorer in bad:
        row = means.filter(pl.col("scorer") == scorer).row(0, named=True)
        assert (row["n_failed"], row["n_ok"], row["mean"]) == (2, 0, None)


def test_simulation_parser_rejects_what_it_cannot_align():
    parse = parse_simulation([2, 3])
    assert parse('{"activations": [[0, 10], [1, 2.5, 0]]}') == [
        [0.0, 10.0], [1.0, 2.5, 0.0]]  # fmt: skip
    for bad in ('{"activations": [[0, 10]]}', '{"activations": [[0], [1, 2, 3]]}',
                '{"activations": [[0, 11], [1, 2, 3]]}',
                '{"activations": [[0, true], [1, 2, 3]]}', "no json"):  # fmt: skip
        with pytest.raises(ParseError):
            parse(bad)


# -- environment ---------------------------------------------------------------


def test_llm_judge_without_its_key_is_caught_before_any_job(monkeypatch):
    """The scorers' judge is the explainer's provider: the environment check
    run before any job names its key for the score step alone."""
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    cfg = validate({"autointerp": {"provider": "openai", "api_key_env": "JUDGE_KEY",
                                   "scorers": ["fuzzing", "simulation"]}})  # fmt: skip
    problems = check_environment(cfg, {"autointerp_score"})
    assert problems[0] == (
        "autointerp.api_key_env: autointerp.provider is 'openai' but the "
        "environment variable JUDGE_KEY is not set"
    )
    assert len(problems) == 2 and problems[1].startswith("autointerp: export JUDGE_KEY")
    monkeypatch.setenv("JUDGE_KEY", "k")
    assert check_environment(cfg, {"autointerp_score"}) == []


def test_scorer_windows_are_cut_to_their_own_width(tmp_path):
    sec = _section(fuzzing={"window": 2}, simulation={"window": 1, "n_contexts": 4})
    feats, ctx = _tables(n=1)
    expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path, "lora")
    row = score_kind(expl, ctx, sec, "t", tmp_path, "lora")[0].row(0, named=True)
    assert row["simulation_tokens"] == 4 * 3  # 4 windows of 1 + centre + 1
    # null: the explainer's example_window (here none: the stored 9 tokens)
    sec = _section(simulation={"window": None})
    row = score_kind(expl, ctx, sec, "t", tmp_path, "lora")[0].row(0, named=True)
    assert row["simulation_tokens"] == 5 * 9


def test_scorer_window_null_follows_the_kinds_example_window(tmp_path):
    """A null scorer window is the explainer's example_window as each kind
    sees it (its kind_overrides entry where set, else the section's); a set
    one is the scorer's own. Fuzzing shows it in its window count: the 10
    held-out windows are 5 true and 5 decoys, and a decoy cut to its centre
    alone (window 0) has no inactive token to mark, so it is left out."""
    sec = _section(
        example_window=3,
        kind_overrides={"lora": {"example_window": 0}},
        fuzzing={"window": None},
        simulation={"window": None, "n_contexts": 4},
    )
    feats, ctx = _tables(n=1)
    expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path, "lora")
    for kind, width, n_fuzz in (("lora", 1, 5), ("mlp", 1 + 2 * 3, 10)):
        row = score_kind(expl, ctx, sec, "t", tmp_path, kind)[0].row(0, named=True)
        assert (row["n_scored"], row["fuzzing_status"]) == (10, "ok")
        assert (row["simulation_tokens"], row["fuzzing_n"]) == (4 * width, n_fuzz)
    sec = _section(example_window=3, fuzzing={"window": 0})
    row = score_kind(expl, ctx, sec, "t", tmp_path, "mlp")[0].row(0, named=True)
    assert row["fuzzing_n"] == 5


# -- the scorers' definitions, case by case (from mutation testing) ---------


def test_active_positions_at_the_threshold_share_of_the_window_max():
    # >= threshold x max: a token at exactly the share is active
    assert active_positions([1.0, 0.5, 0.49, 2.0], 0.25) == [0, 1, 3]
    assert active_positions([4.0, 1.0, 3.0], 0.75) == [0, 2]
    assert active_positions([0.5, 0.25, 0.1], 0.5) == [0, 1]  # a max below 1
    assert active_positions([0.0, 0.0], 0.3) == []  # never fired
    assert active_positions([], 0.3) == []


def test_decoys_mark_distinct_inactive_tokens_capped_at_what_is_idle():
    """A decoy marks ceil(mean active count of the true windows) distinct
    inactive tokens, or every inactive one when it has fewer."""
    two_active = {"tokens": list("abc"), "acts": [5.0, 5.0, 0.0], "center": 1}
    one_active = {"tokens": list("abc"), "acts": [5.0, 0.0, 0.0], "center": 1}
    none_idle = {"tokens": list("ab"), "acts": [1.0, 1.0], "center": 0}
    # true: 2 and 1 active tokens -> decoys mark ceil(1.5) = 2
    held = [two_active, one_active, one_active, one_active] * 3
    cfg = {"n_examples": len(held), "threshold": 0.5}
    for seed in range(5):
        win = fuzz_windows(held, cfg, None, seed, fid=0)
        decoys = [w["marked"] for w in win if not w["label"]]
        assert decoys == [[1, 2]] * 6  # both idle tokens, each once
    # one idle token only: it alone is marked; no idle token: no decoy
    held = [two_active, {**one_active, "acts": [5.0, 5.0, 0.0]}, two_active, none_idle]
    assert fuzz_windows([], cfg, None, 0, fid=0) == []  # nothing held out
    win = fuzz_windows(held, cfg, None, 0, fid=0)
    assert sorted((w["label"], w["marked"]) for w in win) == [
        (False, [2]), (True, [0, 1]), (True, [0, 1])]  # fmt: skip


def test_simulation_windows_clip_negative_truth_and_take_the_first_n():
    held = [
        {"tokens": ["a", "b", "c"], "acts": [-1.0, 0.5, 2.0], "center": 1},
        {"tokens": ["d"], "acts": [3.0], "center": 0},
        {"tokens": ["e"], "acts": [4.0], "center": 0},
    ]
    win = simulation_windows(held, {"n_contexts": 2}, None)
    assert win == [
        {"tokens": ["a", "b", "c"], "acts": [0.0, 0.5, 2.0]},
        {"tokens": ["d"], "acts": [3.0]},
    ]
    assert simulation_windows(held, {"n_contexts": 1}, 0) == [
        {"tokens": ["b"], "acts": [0.5]}]  # fmt: skip


def test_correlation_is_pearson_over_all_windows_or_none():
    truth, pred = [[1.0, 2.0], [0.0, 4.0]], [[2.0, 1.0], [0.0, 9.0]]
    want = np.corrcoef([1, 2, 0, 4], [2, 1, 0, 9])[0, 1]
    assert correlation(truth, pred) == pytest.approx(want)
    assert correlation([[1.0, 2.0]], [[2.0, 4.0]]) == pytest.approx(1.0)  # 2 tokens
    assert correlation([[1.0]], [[2.0]]) is None  # one token
    assert correlation([[3.0, 3.0]], [[1.0, 2.0]]) is None  # constant truth


def test_constant_llm_prediction_is_undefined_keeping_the_reply(tmp_path, monkeypatch):
    """A judge that predicts 0 everywhere gives no correlation: status
    undefined with its reason, the raw reply kept for inspection."""
    monkeypatch.setenv("FAKE_LLM_KEY", "k")
    feats, ctx = _tables(n=1)

    def flat(prompt):
        if "predict how strongly" in prompt:
            n = [
                int(k)
                for k in re.findall(r"^Window \d+ \((\d+) tokens\)", prompt, re.M)
            ]
            return json.dumps({"activations": [[0] * k for k in n]})
        return _judge(prompt)

    with FakeLLMServer(flat) as server:
        sec = _section(provider="openai", model="m", base_url=server.openai_url,
                       api_key_env="FAKE_LLM_KEY", scorers=["simulation"])  # fmt: skip
        expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path / "c.db", "lora")
        row = score_kind(expl, ctx, sec, "t", tmp_path / "c.db", "lora")[0].row(
            0, named=True
        )
    assert (row["simulation"], row["simulation_status"]) == (None, "undefined")
    assert row["simulation_error"] == "constant prediction or truth"
    assert json.loads(row["simulation_raw"])["activations"][0][:2] == [0, 0]


def test_scorer_prompts_and_offline_predictions():
    """What each scorer puts into its template ($n windows, numbered from 1,
    marks as << >>), and the offline simulation's prediction: 10 on each
    token the offline judge says the explanation names, else 0."""
    from string import Template

    t = Template("$n|$explanation|$examples")
    wins = [{"tokens": [" a", " Wait", " b"], "marked": [1]},
            {"tokens": [" x", " y"], "marked": [0, 1]}]  # fmt: skip
    assert FUZZING.prompt(t, "E", wins) == "2|E|1.  a<< Wait>> b\n2. << x y>>"
    sim = SIMULATION.prompt(Template("$n|$explanation|$windows"), "E", wins)
    assert sim.startswith("2|E|Window 1 (3 tokens):  a Wait b\n")
    assert "Window 2 (2 tokens):  x y\n" in sim
    assert SIMULATION.offline('token "Wait"', wins) == [[0.0, 10.0, 0.0], [0.0, 0.0]]
    assert FUZZING.offline('token "Wait"', wins) == [True, False]
