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
from lorascope.core.config import validate

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
    assert set(scores["n_pos"]) == {5} and set(scores["judge"]) == {"offline"}
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
