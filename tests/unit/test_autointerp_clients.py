"""LLM client tests against a real HTTP server on 127.0.0.1 (OpenAI + Anthropic)."""

import json
from dataclasses import replace

import pytest
from fake_llm_server import FakeLLMServer

from lorascope.autointerp.cache import BudgetExceeded, ResponseCache
from lorascope.autointerp.clients import (
    LLMEngine,
    LLMError,
    LLMUnavailable,
    run_prompts,
)
from lorascope.autointerp.prompts import parse_explanation
from lorascope.autointerp.providers import provider_for
from lorascope.autointerp.settings import llm_settings
from lorascope.core.config import validate

PROVIDERS = ["openai", "anthropic"]


def _settings(provider, server, **kw):
    """The provider's client for the schema's defaults with these overrides."""
    url = server.openai_url if provider == "openai" else server.anthropic_url
    base = dict(
        provider=provider,
        model="fake-model",
        base_url=url,
        api_key_env="FAKE_LLM_KEY",
        max_output_tokens=100,
        timeout_s=2.0,
        retries=2,
        parse_retries=1,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        concurrency=4,
        prices={"fake-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        run="test",
    )
    base.update(kw)
    defaults = llm_settings(validate({})["autointerp"], "test")
    return provider_for(replace(defaults, **base), {}, None)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test")


def _prompts(n):
    return [(i, f"explain feature {i}") for i in range(n)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_happy_path_then_cache_hit(provider, tmp_path):
    with FakeLLMServer() as server:
        s = _settings(provider, server)
        out, usage = run_prompts(
            s, tmp_path / "c.db", "t", _prompts(3), parse_explanation
        )
        path = server.requests[0][0]
        assert path.endswith(
            "/chat/completions" if provider == "openai" else "/messages"
        )
        assert len(server.requests) == 3
        assert [out[i].value["explanation"] for i in range(3)] == ["token X"] * 3
        assert all(u["input_tokens"] == 3 and not u["cached"] for u in usage)
        want_cost = (3 * 1.0 + usage[0]["output_tokens"] * 2.0) / 1e6
        assert usage[0]["cost_usd"] == pytest.approx(want_cost)
        # a rerun pays nothing
        out2, usage2 = run_prompts(
            s, tmp_path / "c.db", "t", _prompts(3), parse_explanation
        )
        assert len(server.requests) == 3
        assert all(u["cached"] for u in usage2)
        assert out2[1].value == out[1].value


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_honours_retry_after(provider, tmp_path):
    with FakeLLMServer(script=["429:0.3"]) as server:
        s = _settings(provider, server, concurrency=1)
        out, usage = run_prompts(
            s, tmp_path / "c.db", "t", _prompts(1), parse_explanation
        )
    assert out[0].status == "ok"
    assert len(server.requests) == 2
    # waited the server's 0.3 s, not the 0.01 s backoff
    assert usage[0]["retry_wait_s"] == pytest.approx(0.3)
    assert usage[0]["http_requests"] == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_500_then_success(provider, tmp_path):
    with FakeLLMServer(script=["500"]) as server:
        s = _settings(provider, server, concurrency=1)
        out, usage = run_prompts(
            s, tmp_path / "c.db", "t", _prompts(2), parse_explanation
        )
    assert [out[i].status for i in range(2)] == ["ok", "ok"]
    assert len(server.requests) == 3
    assert usage[0]["retry_wait_s"] == pytest.approx(0.01)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_hang_hits_timeout_then_retries(provider, tmp_path):
    with FakeLLMServer(script=["hang:1.5"]) as server:
        s = _settings(provider, server, timeout_s=0.3, concurrency=1)
        out, _ = run_prompts(s, tmp_path / "c.db", "t", _prompts(1), parse_explanation)
    assert out[0].status == "ok"
    assert len(server.requests) == 2


def test_persistent_hang_fails_clearly(tmp_path):
    with FakeLLMServer(script=["hang:1.5"] * 2) as server:
        s = _settings("openai", server, timeout_s=0.2, retries=1)
        with pytest.raises(LLMUnavailable, match="rerun to resume"):
            run_prompts(s, tmp_path / "c.db", "t", _prompts(1), parse_explanation)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_reply_retried_then_recorded(provider, tmp_path):
    replies = iter(["not json at all", '{"explanation": "x"}', "still bad", "bad"])

    def responder(prompt):
        if prompt.endswith("0"):  # feature 0 always answers garbage
            return next(replies)
        return '{"explanation": "fine", "classification": 1}'

    with FakeLLMServer(responder) as server:
        s = _settings(provider, server, concurrency=1, parse_retries=1)
        out, _ = run_prompts(s, tmp_path / "c.db", "t", _prompts(2), parse_explanation)
    assert out[0].status == "failed"
    assert "malformed reply after 2 attempts" in out[0].error
    assert out[0].raw == '{"explanation": "x"}'  # the last raw reply is kept
    assert out[1].status == "ok" and out[1].value["classification"] == 1
    assert len(server.requests) == 3


def test_garbage_http_body_is_retried_then_fails_clearly(tmp_path):
    with FakeLLMServer(script=["garbage"] * 3) as server:
        s = _settings("openai", server, retries=2, concurrency=1)
        with pytest.raises(LLMUnavailable):
            run_prompts(s, tmp_path / "c.db", "t", _prompts(1), parse_explanation)
        assert len(server.requests) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_budget_cap_stops_then_rerun_resumes(provider, tmp_path):
    with FakeLLMServer() as server:
        s = _settings(provider, server, concurrency=1, max_calls=2)
        with pytest.raises(BudgetExceeded, match="max_calls=2"):
            run_prompts(s, tmp_path / "c.db", "t", _prompts(4), parse_explanation)
        assert len(server.requests) == 2
        s = _settings(provider, server, concurrency=1, max_calls=10)
        out, usage = run_prompts(
            s, tmp_path / "c.db", "t", _prompts(4), parse_explanation
        )
        assert len(server.requests) == 4  # only the two missing calls
        assert sum(u["cached"] for u in usage) == 2
        assert ResponseCache(tmp_path / "c.db").spent("test")[0] == 4


def test_token_budget(tmp_path):
    with FakeLLMServer() as server:
        s = _settings("openai", server, concurrency=1, max_tokens=1)
        with pytest.raises(BudgetExceeded, match="max_tokens=1"):
            run_prompts(s, tmp_path / "c.db", "t", _prompts(3), parse_explanation)
        assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_api_down_midway_then_rerun_makes_only_missing_calls(provider, tmp_path):
    with FakeLLMServer() as server:

        def go_down(n):
            if n == 4:
                server.down = True

        server.on_request = go_down
        s = _settings(provider, server, concurrency=1, retries=1)
        with pytest.raises(LLMUnavailable):
            run_prompts(s, tmp_path / "c.db", "t", _prompts(6), parse_explanation)
        before = len(server.requests)  # 4 answered + 2 failed attempts, no more
        assert before == 6
        server.down, server.on_request = False, None
        out, usage = run_prompts(
            s, tmp_path / "c.db", "t", _prompts(6), parse_explanation
        )
        assert len(server.requests) - before == 2
        assert sum(u["cached"] for u in usage) == 4
        assert all(o.status == "ok" for o in out.values())


def test_auth_error_stops_the_run(tmp_path):
    with FakeLLMServer() as server:
        server._answer_orig = server._answer
        server._answer = lambda h, a, b: server._error(h, 401, "authentication_error")
        s = _settings("openai", server)
        with pytest.raises(LLMError, match="HTTP 401"):
            run_prompts(s, tmp_path / "c.db", "t", _prompts(2), parse_explanation)


def test_missing_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_LLM_KEY")
    with FakeLLMServer() as server:
        s = _settings("openai", server)
        with pytest.raises(RuntimeError, match="FAKE_LLM_KEY"):
            LLMEngine(s, ResponseCache(tmp_path / "c.db"), "t").run(
                _prompts(1), json.loads
            )


# Tests added from mutation testing (`make mutation SESSIONS=autointerp_cache`).


def test_response_cache_stores_replies_and_the_request(tmp_path):
    import sqlite3

    from lorascope.autointerp.cache import CachedReply, cache_key

    request = {"model": "m-1", "messages": ["explain é"], "params": {"t": 0}}
    reordered = {"params": {"t": 0}, "messages": ["explain é"], "model": "m-1"}
    key = cache_key(request)
    assert key == cache_key(reordered) and len(key) == 64
    assert key != cache_key(dict(request, model="m-2"))
    path = tmp_path / "new" / "dir" / "c.db"  # folders made as needed
    cache = ResponseCache(path)
    assert cache.get(key) is None
    cache.put(key, request, CachedReply("first", 3, 4))
    cache.put(key, request, CachedReply("second ü", 5, 6))  # a redo replaces
    cache.put("k2", {"messages": []}, CachedReply("x", 0, 0))  # no model named
    assert cache.get(key) == CachedReply("second ü", 5, 6)
    cache.close()
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT key, model, request, text FROM responses ORDER BY key"
        ).fetchall()
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    stored = json.dumps(reordered, sort_keys=True, ensure_ascii=False)
    assert rows == [
        (key, "m-1", stored, "second ü"),
        ("k2", "", '{"messages": []}', "x"),
    ]
    assert "é" in rows[0][2]  # stored readable, not \\u-escaped
    assert mode == "wal"  # several jobs share one database


def test_ledger_counts_per_run_refuses_over_the_caps_and_stays_usable(tmp_path):
    path = tmp_path / "c.db"
    a, b = ResponseCache(path), ResponseCache(path)  # two jobs, one database
    assert a.spent("run") == (0, 0)
    first = a.reserve("run", "explain", "k1", max_calls=None, max_tokens=None)
    second = b.reserve("run", "explain", "k2", max_calls=3, max_tokens=100)
    assert second > first
    a.reserve("other", "score", "k3", max_calls=1, max_tokens=None)
    b.settle(first, 40)
    a.settle(second, 2.0)
    assert b.spent("run") == (2, 42) and a.spent("other") == (1, 0)
    with pytest.raises(BudgetExceeded) as err:
        a.reserve("run", "score", "k4", max_calls=2, max_tokens=None)
    assert str(err.value) == (
        f"autointerp.budget.max_calls=2 reached for run 'run' "
        f"(2 requests sent, ledger {path})"
    )
    with pytest.raises(BudgetExceeded) as err:
        b.reserve("run", "score", "k4", max_calls=None, max_tokens=42)
    assert str(err.value) == (
        f"autointerp.budget.max_tokens=42 reached for run 'run' "
        f"(42 tokens used, ledger {path})"
    )
    # A refusal records nothing and leaves no transaction open.
    assert a.spent("run") == (2, 42)
    a.reserve("run", "score", "k4", max_calls=3, max_tokens=43)
    b.reserve("run", "score", "k5", max_calls=None, max_tokens=43)
    assert a.spent("run") == (4, 42)
    with pytest.raises(BudgetExceeded, match="max_calls=1 reached for run 'other'"):
        b.reserve("other", "score", "k6", max_calls=1, max_tokens=None)


def test_cache_key_of_a_request_is_pinned():
    """The key is part of every existing cache: a change of its encoding (key
    order, non-ASCII text escaped or not) would make every cached reply a miss
    and pay for it again. Pinned: sha256 of the sorted-key JSON, UTF-8."""
    from lorascope.autointerp.cache import cache_key

    request = {
        "provider": "openai",
        "model": "m",
        "messages": [{"role": "user", "content": "é"}],
        "params": {"temperature": 0},
    }
    assert cache_key(request) == (
        "e2a55168311a885268a07eb1118762580b17ac3ac5b9d5ce795949ac98fbbb79"
    )


def test_response_cache_waits_for_other_jobs_and_serves_any_thread(tmp_path):
    """Jobs sharing the database wait up to a minute for its write lock (not
    sqlite's default 5 s); the engine's worker threads share one connection."""
    import threading

    from lorascope.autointerp.cache import CachedReply

    cache = ResponseCache(tmp_path / "c.db")
    assert cache._db.execute("PRAGMA busy_timeout").fetchone()[0] == 60_000
    got = []

    def worker():
        cache.put("k", {"model": "m"}, CachedReply("from a thread", 1, 2))
        got.append(cache.get("k"))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert got == [CachedReply("from a thread", 1, 2)]
    assert cache.get("k") == CachedReply("from a thread", 1, 2)
