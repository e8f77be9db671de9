"""The provider table is the one place a provider is named: a class registered
there is picked up by every step and by the environment check."""

import json

import pytest
from autointerp_data import make_tables
from fake_llm_server import FakeLLMServer

from lorascope.autointerp.clients import Outcome
from lorascope.autointerp.explain import explain_kind
from lorascope.autointerp.providers import PROVIDERS, OpenAI, Provider
from lorascope.autointerp.scoring import score_kind
from lorascope.core.config import validate
from lorascope.workflow.environment import check_environment


class Echo(Provider):
    """A test-only provider: every feature is explained by its first token."""

    def explain(self, step, items):
        return {
            fid: Outcome(fid, value={"explanation": ctxs[0]["tokens"][0],
                                     "classification": 1, "reasoning": step})
            for fid, ctxs in items
        }, []  # fmt: skip

    def detect(self, step, items):
        return {fid: Outcome(fid, value=[True] * len(w)) for fid, _, w in items}, []

    def judge(self, step, scorer, items):
        return {f: Outcome(f, value=scorer.offline(e, p)) for f, e, p in items}, []

    def propose(self, sample, sae_sample):
        raise NotImplementedError

    def assign(self, step, items, choices, kind):
        raise NotImplementedError


def _section(provider, **over):
    # The schema's enum lists the shipped providers; a test-only one is set
    # after validation, as the rules receive the section.
    return validate({"autointerp": over})["autointerp"] | {"provider": provider}


def test_a_registered_provider_is_picked_up_by_explain_and_score(tmp_path, monkeypatch):
    monkeypatch.setitem(PROVIDERS, "echo", Echo)
    feats, ctx = make_tables("lora", 3, seed=1)
    sec = _section("echo", model="v1")
    expl, usage = explain_kind(feats, ctx, sec, "t", tmp_path / "c.db", "lora")
    assert usage == [] and set(expl["explainer"]) == {"echo:v1"}
    assert set(expl["reasoning"]) == {"explain_lora"}
    assert expl["classification"].to_list() == [1, 1, 1]
    scores, _ = score_kind(expl, ctx, sec, "t", tmp_path / "c.db", "lora")
    assert set(scores["judge"]) == {"echo:v1"}
    assert set(scores["fp"]) != {0}  # every window judged as firing
    assert scores["fuzzing"].is_not_null().all()  # its judge answers the scorers


def test_an_unknown_provider_names_the_table(tmp_path):
    feats, ctx = make_tables("lora", 1, seed=1)
    with pytest.raises(ValueError, match="not one of offline, openai, anthropic"):
        explain_kind(feats, ctx, _section("nope"), "t", tmp_path / "c.db", "lora")


class Compat(OpenAI):
    """A new SDK-style row: an OpenAI-compatible service with its own key."""

    key_env = "COMPAT_API_KEY"


def test_a_new_llm_row_sends_requests_and_its_key_is_checked(tmp_path, monkeypatch):
    monkeypatch.setitem(PROVIDERS, "compat", Compat)
    monkeypatch.delenv("COMPAT_API_KEY", raising=False)
    answer = {"explanation": "x", "classification": 0}
    with FakeLLMServer(lambda prompt: json.dumps(answer)) as server:
        sec = _section("compat", model="m", base_url=server.openai_url)
        assert check_environment({"autointerp": sec}, {"autointerp_explain"}) == [
            "autointerp.api_key_env: autointerp.provider is 'compat' but the "
            "environment variable COMPAT_API_KEY is not set",
            "autointerp: export COMPAT_API_KEY; or run without LLM calls: "
            "--config 'autointerp={provider: offline}'",
        ]
        monkeypatch.setenv("COMPAT_API_KEY", "k")
        assert check_environment({"autointerp": sec}, {"autointerp_explain"}) == []
        feats, ctx = make_tables("lora", 2, seed=1)
        expl, usage = explain_kind(feats, ctx, sec, "t", tmp_path / "c.db", "lora")
    assert set(expl["explainer"]) == {"compat:m"} and len(server.requests) == 2
    assert {u["provider"] for u in usage} == {"compat"}


def test_schema_offers_exactly_the_providers_in_the_table():
    """A provider is a class and a row in PROVIDERS, plus its name in the
    schema's two provider enums (explainer, categorizer): this keeps the three
    in step, so a new row without its enum (or the reverse) fails here."""
    from lorascope.autointerp.providers import PROVIDERS
    from lorascope.core.config import load_schema

    ai = load_schema()["properties"]["autointerp"]["properties"]
    categories = ai["categories"]["properties"]
    for where, node in (("autointerp", ai), ("autointerp.categories", categories)):
        # (null: the categorizer follows the explainer's provider)
        assert set(node["provider"]["enum"]) - {None} == set(PROVIDERS), where
