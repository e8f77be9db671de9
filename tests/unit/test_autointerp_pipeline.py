"""Offline explainer, categories, detection scoring and summaries on synthetic
feature tables; the same stages against the fake LLM server."""

import json

import polars as pl
import pytest
import yaml
from autointerp_data import make_tables
from fake_llm_server import FakeLLMServer

from lorascope.autointerp.categories import assign_kind, propose_categories
from lorascope.autointerp.explain import explain_kind
from lorascope.autointerp.scoring import score_kind
from lorascope.autointerp.summary import (
    category_shares,
    class_shares,
    sae_category_density,
)
from lorascope.core.config import ConfigError, validate

MIXED = [" 3", ",", " cat", "\n", " +", " Paris", " so", " ."]
NUMS = [" 3", " 12", " 7", " 45", " 8", " 99", " 1", " 60"]


def _token_of(f, r):
    return [" Wait", MIXED[r], NUMS[r]][f % 3]


def _section(**over):
    cfg = yaml.safe_load(open("config/config.yaml"))
    cfg.setdefault("autointerp", {}).update(over)
    return validate(cfg)["autointerp"]


def _tables(kind, n=6):
    return make_tables(kind, n, token_of=_token_of, seed=len(kind))


def test_offline_explainer_names_the_single_token(tmp_path):
    feats, ctx = _tables("lora")
    expl, usage = explain_kind(feats, ctx, _section(), "t", tmp_path / "c.db", "lora")
    assert usage == [] and set(expl["explainer"]) == {"offline"}
    rows = {r["feature"]: r for r in expl.iter_rows(named=True)}
    assert '"Wait"' in rows[0]["explanation"] and rows[0]["classification"] == 0
    assert rows[1]["classification"] == 2  # eight unrelated tokens
    assert rows[2]["classification"] == 1  # numbers, split between 1 and 2 digits
    assert rows[2]["explanation"].startswith("numbers tokens")


def test_missing_contexts_and_bad_rows_are_never_dropped_silently(tmp_path):
    feats, ctx = _tables("mlp")
    expl, _ = explain_kind(
        feats, ctx.filter(pl.col("feature") != 3), _section(), "t", tmp_path, "mlp"
    )
    assert expl.height == feats.height
    assert expl.filter(pl.col("feature") == 3)["status"].item() == "no_contexts"
    bad = ctx.with_columns(pl.when(pl.col("rank") == 2).then(99).otherwise(
        pl.col("center")).alias("center"))  # fmt: skip
    with pytest.raises(ValueError, match="feature 0 rank 2 has center 99"):
        explain_kind(feats, bad, _section(), "t", tmp_path, "mlp")


def test_offline_pipeline_end_to_end(tmp_path):
    sec = _section()
    tabs = {k: _tables(k) for k in ("lora", "mlp", "sae")}
    expl = {k: explain_kind(*tabs[k], sec, "t", tmp_path, k)[0] for k in tabs}
    cats, usage = propose_categories(expl, sec, "t", tmp_path)
    assert usage == [] and cats["explainer"] == "offline"
    assert 5 <= len(cats["categories"]) <= 8
    assign = {k: assign_kind(expl[k], tabs[k][1], cats, sec, "t", tmp_path, k)[0]
              for k in tabs}  # fmt: skip
    assert (
        assign["lora"].filter(pl.col("feature") == 0)["category"].item() == "discourse"
    )
    assert assign["sae"]["subcategory"].null_count() == 0
    assert assign["lora"]["subcategory"].null_count() == 6
    scores = score_kind(expl["lora"], tabs["lora"][1], sec, "t", tmp_path, "lora")[0]
    ba = dict(zip(scores["feature"], scores["balanced_accuracy"], strict=True))
    assert ba[0] == 1.0  # "Wait" explanation finds exactly the Wait windows
    # Half of each feature's 8 contexts are held out for scoring (split.n_score
    # 10 is capped at half), so detection has 4 activating windows, not 5.
    assert set(scores["n_scored"]) == {4} and set(scores["n_pos"]) == {4}
    assert set(scores["judge"]) == {"offline"}
    dens = sae_category_density(assign["sae"], tabs["sae"][0])
    cat_level = dens.filter(pl.col("level") == "category")
    assert cat_level["density"].sum() == pytest.approx(1.0)
    shares = category_shares(assign, 50, 0)
    assert set(shares["kind"]) == {"lora", "mlp", "sae"}


def test_bootstrap_intervals_cover_the_share():
    classes = [0] * 30 + [1] * 50 + [2] * 20
    df = pl.DataFrame({"classification": classes, "status": ["ok"] * 100,
                       "explainer": ["offline"] * 100})  # fmt: skip
    out = class_shares({"lora": df}, 2000, 0).sort("classification")
    share, lo, hi = out.row(0)[4:7] if False else (
        out["share"][0], out["ci_low"][0], out["ci_high"][0])  # fmt: skip
    assert share == pytest.approx(0.3)
    # binomial SE ~0.046: a 95% interval about 0.18 wide around 0.3
    assert lo < 0.3 < hi and 0.13 < hi - lo < 0.23
    assert out["share"].sum() == pytest.approx(1.0)


def test_enrichment_ratio():
    def frame(cats):
        return pl.DataFrame({"category": cats, "status": ["ok"] * len(cats)})

    a = {"lora": frame(["x"] * 50 + ["y"] * 50), "mlp": frame(["x"] * 25 + ["y"] * 75)}
    out = category_shares(a, 500, 0).filter(pl.col("kind") == "lora")
    x = out.filter(pl.col("category") == "x")
    assert x["enrichment"].item() == pytest.approx(2.0)
    assert x["enrichment_ci_low"].item() < 2.0 < x["enrichment_ci_high"].item()


def test_custom_template_must_keep_placeholders(tmp_path):
    bad = tmp_path / "mine.txt"
    bad.write_text("explain please")
    feats, ctx = _tables("lora")
    sec = _section(provider="openai", prompts={"explain": str(bad)})
    with pytest.raises(ValueError, match=r"autointerp.prompts.explain .*\$examples"):
        explain_kind(feats, ctx, sec, "t", tmp_path / "c.db", "lora")


def _simulate_reply(prompt, token=" Wait"):
    """A well-formed simulation reply: 10 on `token`, 0 elsewhere, one list
    per window of the prompt's numbered token lines."""
    windows = []
    for line in prompt.splitlines():
        if line.startswith("Window "):
            windows.append([])
        elif windows and "\t" in line and line.split("\t")[0].isdigit():
            shown = json.loads(line.split("\t", 1)[1])
            windows[-1].append(10 if shown == token else 0)
    return json.dumps({"activations": windows})


def _responder(prompt):
    if "Group them by the job" in prompt:
        return json.dumps({"categories": [
            {"string_id": "tokens", "name": "T", "definition": "d", "examples": []},
            {"string_id": "math", "name": "Math", "definition": "d", "examples": []}],
            "summary": "s"})  # fmt: skip
    if "finer subcategories" in prompt:
        return json.dumps(
            {
                "subcategories": {
                    "tokens": [{"string_id": "wait"}],
                    "math": [{"string_id": "digits"}],
                }
            }
        )
    if "exactly one of the categories" in prompt:
        return "tokens/wait" if "tokens/wait" in prompt else "`math`"
    if "which windows it fires on" in prompt:
        return '{"activating": [1, 2]}'
    if "every marked" in prompt:
        return '{"correct": [1, 2]}'
    if "predict how strongly" in prompt:
        return _simulate_reply(prompt)
    return '{"explanation": "the Wait token", "classification": 0}'


def test_llm_pipeline_against_fake_server(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "k")
    with FakeLLMServer(_responder) as server:
        common = dict(base_url=server.openai_url, api_key_env="FAKE_LLM_KEY")
        sec = _section(provider="openai", model="m", **common, categories=dict(
            provider="anthropic", model="c", base_url=server.anthropic_url,
            api_key_env="FAKE_LLM_KEY"))  # fmt: skip
        db = tmp_path / "c.db"
        tabs = {k: _tables(k, 3) for k in ("lora", "mlp", "sae")}
        expl = {k: explain_kind(*tabs[k], sec, "t", db, k)[0] for k in tabs}
        assert set(expl["lora"]["explainer"]) == {"openai:m"}
        assert expl["lora"]["classification"].to_list() == [0, 0, 0]
        cats, usage = propose_categories(expl, sec, "t", db)
        assert cats["explainer"] == "anthropic:c" and len(usage) == 2
        assert cats["categories"][0]["subcategories"][0]["string_id"] == "wait"
        sae = assign_kind(expl["sae"], tabs["sae"][1], cats, sec, "t", db, "sae")[0]
        assert set(zip(sae["category"], sae["subcategory"], strict=True)) == {
            ("tokens", "wait")}  # fmt: skip
        mlp = assign_kind(expl["mlp"], tabs["mlp"][1], cats, sec, "t", db, "mlp")[0]
        assert set(mlp["category"]) == {"math"}
        scores = score_kind(expl["lora"], tabs["lora"][1], sec, "t", db, "lora")[0]
        assert scores["balanced_accuracy"].is_between(0, 1).all()
        n = len(server.requests)
        # a full rerun of every stage pays nothing
        for k in tabs:
            explain_kind(*tabs[k], sec, "t", db, k)
        propose_categories(expl, sec, "t", db)
        assert len(server.requests) == n


def test_few_context_features_are_left_out_of_shares_and_counted(tmp_path):
    """A feature marked few_contexts (activations.min_contexts) is not
    explained, keeps that status through assign and score, and the summaries
    count it as excluded, not failed."""
    sec = _section()
    tabs = {}
    for k in ("lora", "mlp", "sae"):
        feats, ctx = _tables(k)
        feats = feats.with_columns(
            few_contexts=pl.col("feature") == 2,
            n_contexts=pl.when(pl.col("feature") == 2).then(3).otherwise(8),
        )
        ctx = ctx.filter((pl.col("feature") != 2) | (pl.col("rank") < 3))
        tabs[k] = (feats, ctx)
    expl = {k: explain_kind(*tabs[k], sec, "t", tmp_path, k)[0] for k in tabs}
    row = expl["lora"].filter(pl.col("feature") == 2).row(0, named=True)
    assert row["status"] == "few_contexts" and row["explanation"] is None
    assert "3 real contexts" in row["error"]
    assert set(expl["lora"]["population"]) == {"lora test population"}
    cats, _ = propose_categories(expl, sec, "t", tmp_path)
    assign = assign_kind(
        expl["lora"], tabs["lora"][1], cats, sec, "t", tmp_path, "lora"
    )
    score = score_kind(expl["lora"], tabs["lora"][1], sec, "t", tmp_path, "lora")
    for table in (assign[0], score[0]):
        assert table.filter(pl.col("feature") == 2)["status"].item() == "few_contexts"
    classes = class_shares(expl, 50, 0).filter(pl.col("kind") == "lora")
    assert set(classes["n_ok"]) == {5} and set(classes["n_excluded"]) == {1}
    assert set(classes["n_failed"]) == {0}
    assert set(classes["population"]) == {"lora test population"}
    shares = category_shares({"lora": assign[0]}, 50, 0)
    assert set(shares["n_excluded"]) == {1} and shares["n"].sum() == 5


def test_example_selection_count_window_per_doc_and_shuffle():
    from lorascope.autointerp.explain import select_examples

    ctxs = [
        {"doc": d, "rank": r, "tokens": [str(i) for i in range(9)],
         "acts": [float(i) for i in range(9)], "center": 4}
        for r, d in enumerate([0, 0, 0, 1, 0, 2, 3])
    ]  # fmt: skip
    base = dict(n_contexts=64, example_window=None, shuffle_examples=False,
                max_examples_per_doc=None)  # fmt: skip
    assert select_examples(ctxs, base, 0, 1) == ctxs
    assert [c["rank"] for c in select_examples(ctxs, {**base, "n_contexts": 3}, 0, 1)
            ] == [0, 1, 2]  # fmt: skip
    capped = select_examples(ctxs, {**base, "max_examples_per_doc": 2}, 0, 1)
    assert [c["rank"] for c in capped] == [0, 1, 3, 5, 6]
    cut = select_examples(ctxs, {**base, "example_window": 1}, 0, 1)[0]
    assert cut["tokens"] == ["3", "4", "5"] and cut["center"] == 1
    assert cut["acts"] == [3.0, 4.0, 5.0]
    shuffled = select_examples(ctxs, {**base, "shuffle_examples": True}, 0, 1)
    assert sorted(c["rank"] for c in shuffled) == list(range(7))
    assert [c["rank"] for c in shuffled] != list(range(7))
    assert shuffled == select_examples(ctxs, {**base, "shuffle_examples": True}, 0, 1)


def test_kind_overrides_change_the_explainer_prompt_and_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "k")
    with FakeLLMServer(_responder) as server:
        sec = _section(
            provider="openai", model="m", base_url=server.openai_url,
            api_key_env="FAKE_LLM_KEY", n_contexts=5, split={"n_score": 2},
            kind_overrides={"sae": {"n_contexts": 2, "example_window": 1,
                                    "max_output_tokens": 77}},
        )  # fmt: skip
        for kind in ("lora", "sae"):
            explain_kind(*_tables(kind, 1), sec, "t", tmp_path / "c.db", kind)
        (_, lora_body), (_, sae_body) = server.requests
    lora_prompt = lora_body["messages"][-1]["content"]
    sae_prompt = sae_body["messages"][-1]["content"]
    assert lora_prompt.count("<example>") == 5 + 1  # + the template's sample
    assert sae_prompt.count("<example>") == 2 + 1
    assert lora_body["max_completion_tokens"] == 4000
    assert sae_body["max_completion_tokens"] == 77
    # window 1: three tokens per example line (the explainer template's own
    # sample block is first)
    first = sae_prompt.split("<examples>")[1].split("<example>\n")[1]
    assert len(first.splitlines()[0]) < len(
        lora_prompt.split("<examples>")[1].split("<example>\n")[1].splitlines()[0]
    )


def _template_dir(tmp_path, marker):
    from lorascope.autointerp.prompts import REQUIRED

    d = tmp_path / "prompts"
    d.mkdir()
    for name, needed in REQUIRED.items():
        body = f"{marker} {name}: " + " ".join(f"${p}" for p in sorted(needed))
        (d / f"{name}.txt").write_text(body)
    return d


def test_prompts_dir_points_every_stage_at_the_users_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "k")
    d = _template_dir(tmp_path, "MINE")

    def responder(prompt):
        stage = prompt.split(":")[0].removeprefix("MINE ")
        return {
            "categories": _responder("Group them by the job"),
            "sae_categories": _responder("Group them by the job"),
            "subcategories": _responder("finer subcategories"),
            "assign": "tokens",
            "detect": '{"activating": [1]}',
            "fuzz": '{"correct": [1]}',
            "simulate": _simulate_reply(prompt),
        }.get(stage, _responder("explain"))

    with FakeLLMServer(responder) as server:
        common = dict(base_url=server.openai_url, api_key_env="FAKE_LLM_KEY")
        sec = _section(provider="openai", model="m", prompts={"dir": str(d)},
                       categories=dict(provider="openai", model="m", sae_taxonomy="own",
                                       **common), **common)  # fmt: skip
        db = tmp_path / "c.db"
        tabs = {k: _tables(k, 2) for k in ("lora", "mlp", "sae")}
        expl = {k: explain_kind(*tabs[k], sec, "t", db, k)[0] for k in tabs}
        cats, _ = propose_categories(expl, sec, "t", db)
        assign_kind(expl["lora"], tabs["lora"][1], cats, sec, "t", db, "lora")
        score_kind(expl["lora"], tabs["lora"][1], sec, "t", db, "lora")
        stages = {p.split(":")[0] for p in server.prompts()}
    assert stages == {f"MINE {n}" for n in (
        "explain", "categories", "sae_categories", "subcategories", "assign",
        "detect", "fuzz", "simulate")}  # fmt: skip
    (d / "detect.txt").unlink()
    # Each step reads only its own templates; the config check asks for all.
    explain_kind(*tabs["lora"], sec, "t", db, "lora")
    with pytest.raises(FileNotFoundError, match=r"prompts.dir .* lacks detect.txt"):
        score_kind(expl["lora"], tabs["lora"][1], sec, "t", db, "lora")
    with pytest.raises(ConfigError, match=r"prompts.dir: .* lacks detect.txt"):
        _section(prompts={"dir": str(d)})
    (d / "explain.txt").write_text("no placeholder")
    mine = tmp_path / "detect.txt"
    mine.write_text("$explanation $contexts $n")
    sec["prompts"]["detect"] = str(mine)  # a per-template path fills the gap
    with pytest.raises(ValueError, match=r"prompts.explain .*\$examples"):
        explain_kind(*tabs["lora"], sec, "t", db, "lora")


def _taxonomy_responder(prompt):
    if "dictionary features" in prompt:  # the sae_categories template
        return json.dumps({"categories": [
            {"string_id": "operators", "name": "Operators", "definition": "d"},
            {"string_id": "control", "name": "Control flow", "definition": "d"}],
            "summary": "sae"})  # fmt: skip
    if "finer subcategories" in prompt:
        return json.dumps(
            {
                "subcategories": {
                    "operators": [{"string_id": "plus"}],
                    "control": [{"string_id": "wait"}],
                }
            }
        )
    if "exactly one of the categories" in prompt:
        return "control/wait" if "control/wait" in prompt else "tokens"
    return _responder(prompt)


def test_sae_taxonomy_own_gives_sae_features_their_own_categories(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("FAKE_LLM_KEY", "k")
    with FakeLLMServer(_taxonomy_responder) as server:
        common = dict(base_url=server.openai_url, api_key_env="FAKE_LLM_KEY")
        db = tmp_path / "c.db"
        tabs = {k: _tables(k, 2) for k in ("lora", "mlp", "sae")}
        out = {}
        for taxonomy in ("shared", "own"):
            cat = dict(provider="openai", model="m", sae_taxonomy=taxonomy)
            sec = _section(
                provider="openai", model="m", **common, categories={**cat, **common}
            )
            expl = {k: explain_kind(*tabs[k], sec, "t", db, k)[0] for k in tabs}
            cats, _ = propose_categories(expl, sec, "t", db)
            sae = assign_kind(expl["sae"], tabs["sae"][1], cats, sec, "t", db, "sae")
            lora = assign_kind(expl["lora"], tabs["lora"][1], cats, sec, "t", db,
                               "lora")  # fmt: skip
            out[taxonomy] = (cats, sae[0], lora[0])
    shared_cats, shared_sae, _ = out["shared"]
    assert "sae_categories" not in shared_cats
    assert set(shared_sae["category"]) <= {"tokens", "math"}
    own_cats, own_sae, own_lora = out["own"]
    assert [c["string_id"] for c in own_cats["sae_categories"]] == [
        "operators", "control"]  # fmt: skip
    assert all(not c["subcategories"] for c in own_cats["categories"])
    assert set(zip(own_sae["category"], own_sae["subcategory"], strict=True)) == {
        ("control", "wait")}  # fmt: skip
    assert set(own_lora["category"]) == {"tokens"}  # LoRA/MLP keep theirs


# Tests added from mutation testing (`make mutation SESSIONS=autointerp_scoring`).


def test_balanced_accuracy_from_its_definition():
    from lorascope.autointerp.scoring import balanced_accuracy

    labels = [True, True, True, False, False, False, False, True]
    preds = [True, False, True, False, True, False, False, True]
    got = balanced_accuracy(labels, preds)
    # hits 3 of 4 activating, rejects 3 of 4 non-activating
    assert got == {"tp": 3, "fn": 1, "tn": 3, "fp": 1, "balanced_accuracy": 0.75}
    assert balanced_accuracy([True, True], [True, False])["balanced_accuracy"] == 0.5
    assert balanced_accuracy([False, False, False], [True, False, False]) == {
        "tp": 0, "fn": 0, "tn": 2, "fp": 1, "balanced_accuracy": pytest.approx(2 / 3)
    }  # fmt: skip
    assert balanced_accuracy([], [])["balanced_accuracy"] is None
    # as many false alarms as correct rejections: the rejection rate is 1/2
    assert balanced_accuracy([True, False, False], [True, True, False]) == {
        "tp": 1, "fn": 0, "tn": 1, "fp": 1, "balanced_accuracy": 0.75
    }  # fmt: skip


def _ctx(feature, doc, pos):
    return {"feature": feature, "doc": doc, "pos": pos}


def test_detection_windows_mix_own_and_foreign_contexts_seeded():
    from lorascope.autointerp.scoring import detection_windows

    by_feature = {
        f: [_ctx(f, doc=10 * f + i, pos=i) for i in range(6)] for f in range(4)
    }
    # Another feature's context at one of feature 0's own places never
    # counts as non-activating, nor does one place twice.
    by_feature[3].append(_ctx(3, doc=0, pos=0))
    by_feature[2].append(dict(by_feature[1][0], feature=2))
    pool = [c for rows in by_feature.values() for c in rows]
    win = detection_windows(0, by_feature, pool, 4, 15, seed=7)
    pos = [c for c, is_pos in win if is_pos]
    neg = [c for c, is_pos in win if not is_pos]
    assert len(pos) == 4 and all(c in by_feature[0] for c in pos)
    assert len({(c["doc"], c["pos"]) for c in pos}) == 4
    assert len(neg) == 15 and all(c["feature"] != 0 for c in neg)
    places = [(c["doc"], c["pos"]) for c in neg]
    assert len(set(places)) == 15 and (0, 0) not in places
    assert not set(places) & {(c["doc"], c["pos"]) for c in by_feature[0]}
    # Seeded per (seed, feature): the same call gives the same windows,
    # another seed or feature others; positives are shuffled in.
    assert detection_windows(0, by_feature, pool, 4, 15, seed=7) == win
    assert detection_windows(0, by_feature, pool, 4, 15, seed=8) != win
    assert detection_windows(1, by_feature, pool, 4, 15, seed=7) != win
    firsts = {
        detection_windows(0, by_feature, pool, 4, 4, seed=s)[0][1] for s in range(20)
    }
    assert firsts == {True, False}
    # Fewer candidates than asked: all there are.
    small = detection_windows(0, by_feature, pool, 10, 100, seed=1)
    assert sum(p for _, p in small) == 6
    assert sum(not p for _, p in small) == len(pool) - 6 - 2


def test_score_rows_keep_every_feature_and_say_why_one_is_unscored(tmp_path):
    """One row per explanation, in feature order: scored ones carry the
    confusion counts of their windows, left-out ones keep their status, a
    failed explanation or one without contexts is `failed` with the reason."""
    sec = _section()
    feats, ctx = _tables("lora")
    expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path, "lora")
    expl = expl.with_columns(
        status=pl.when(pl.col("feature") == 3)
        .then(pl.lit("few_contexts"))
        .when(pl.col("feature") == 4)
        .then(pl.lit("parse_error"))
        .otherwise(pl.col("status")),
        error=pl.when(pl.col("feature") == 3)
        .then(pl.lit("3 real contexts"))
        .otherwise(pl.col("error")),
    ).sort("feature", descending=True)
    ctx = ctx.filter(pl.col("feature") != 5)  # explained, contexts gone since
    scores, usage = score_kind(expl, ctx, sec, "t", tmp_path, "lora")
    assert usage == [] and scores["feature"].to_list() == list(range(6))
    rows = {r["feature"]: r for r in scores.iter_rows(named=True)}
    assert (rows[3]["status"], rows[3]["error"]) == ("few_contexts", "3 real contexts")
    assert (rows[4]["status"], rows[4]["error"]) == (
        "failed",
        "explanation parse_error",
    )
    assert (rows[5]["status"], rows[5]["error"]) == (
        "failed",
        "no contexts in features/lora/contexts.parquet",
    )
    det = sec["detection"]
    for f in (0, 1, 2):
        r = rows[f]
        assert r["status"] == "ok" and r["kind"] == "lora" and r["judge"] == "offline"
        # 4 of the 8 contexts held out (split.n_score capped at half): all 4
        # are activating windows (fewer than detection.n_activating)
        assert r["n_scored"] == 4 < det["n_activating"]
        assert (r["n_pos"], r["n_neg"]) == (4, det["n_nonactivating"])
        assert r["tp"] + r["fn"] == r["n_pos"] and r["tn"] + r["fp"] == r["n_neg"]
        want = (r["tp"] / r["n_pos"] + r["tn"] / r["n_neg"]) / 2
        assert r["balanced_accuracy"] == pytest.approx(want)
    for f in (3, 4, 5):
        assert rows[f]["balanced_accuracy"] is None and rows[f]["n_pos"] is None


def test_a_bad_context_row_fails_scoring_naming_the_kinds_file(tmp_path):
    feats, ctx = _tables("mlp")
    expl, _ = explain_kind(feats, ctx, _section(), "t", tmp_path, "mlp")
    bad = ctx.with_columns(acts=pl.when(pl.col("rank") == 1).then(
        pl.col("acts").list.head(2)).otherwise(pl.col("acts")))  # fmt: skip
    with pytest.raises(ValueError, match=(
        r"^features/mlp/contexts\.parquet: feature 0 rank 1 has center 4, "
        r"9 tokens, 2 acts$")):  # fmt: skip
        score_kind(expl, bad, _section(), "t", tmp_path, "mlp")


def test_a_feature_with_one_context_left_has_nothing_to_score(tmp_path):
    """The score split holds at most half a feature's contexts: an explained
    feature down to one context (the rest gone since) is left out of every
    scorer as few_contexts, not failed and not scored."""
    sec = _section()
    feats, ctx = _tables("lora", n=2)
    expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path, "lora")
    one = ctx.filter((pl.col("feature") == 0) | (pl.col("rank") == 0))
    rows = score_kind(expl, one, sec, "t", tmp_path, "lora")[0].rows(named=True)
    assert rows[1]["n_scored"] == 0
    for p in ("", "fuzzing_", "simulation_"):  # detection, fuzzing, simulation
        assert (rows[1][f"{p}status"], rows[1][f"{p}error"]) == (
            "few_contexts", "no context left to score")  # fmt: skip
        assert rows[0][f"{p}status"] == "ok"
    assert rows[1]["balanced_accuracy"] is None and rows[1]["n_pos"] is None


def test_detection_takes_n_activating_of_the_held_out_contexts(tmp_path):
    sec = _section(detection={"n_activating": 3, "n_nonactivating": 5})
    feats, ctx = _tables("lora", n=3)
    expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path, "lora")
    for r in score_kind(expl, ctx, sec, "t", tmp_path, "lora")[0].rows(named=True):
        assert (r["n_scored"], r["n_pos"], r["n_neg"]) == (4, 3, 5)


def test_score_table_has_its_documented_schema_even_when_empty(tmp_path):
    """scores/{kind}.parquet's columns and types (scoring.py's docstring),
    also with a scorer not run (its columns all null) and with no features."""
    from lorascope.autointerp.scoring import SCORE_SCHEMA

    sec = _section(scorers=["detection"])
    feats, ctx = _tables("lora", n=2)
    expl, _ = explain_kind(feats, ctx, sec, "t", tmp_path, "lora")
    for e in (expl, expl.clear()):
        scores = score_kind(e, ctx, sec, "t", tmp_path, "lora")[0]
        assert dict(scores.schema) == SCORE_SCHEMA
        assert (
            scores["n_scored"].dtype == pl.Int32 and scores["judge"].dtype == pl.String
        )
    assert scores.height == 0
