"""No secret on disk: only known-safe request settings are written in clear.

Each of the four leaks issue 33 found (item 9) against every sink: the LLM
cache database (against a real HTTP server), the params Snakemake records
(`JobConfig` repr), job logs (`script_logging`), and `resolved_config.yaml`.
"""

import base64
import copy
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_llm_server import FakeLLMServer

from lorascope.autointerp.cache import ResponseCache, cache_key
from lorascope.autointerp.clients import LLMEngine, LLMError, run_prompts
from lorascope.autointerp.prompts import parse_explanation
from lorascope.autointerp.providers import provider_for
from lorascope.autointerp.settings import llm_settings
from lorascope.core import secrets
from lorascope.core.config import load_schema, validate, write_provenance
from lorascope.core.runtime import script_logging
from lorascope.core.secrets import REDACTED, redact, scrub_text, scrub_url
from lorascope.workflow.wiring import declared, recorded

SECRET = "s3cr3t-value-0123456789"
# The four leaks: autointerp overrides that carry SECRET.
LEAKS = {
    "azure-header": {
        "request_params": {"extra_headers": {"Ocp-Apim-Subscription-Key": SECRET}}
    },
    "custom-auth-header": {
        "request_params": {"extra_headers": {"X-Custom-Auth": SECRET}}
    },
    "extra-query": {
        "request_params": {"extra_query": {"subscription-key": SECRET, "t": SECRET}}
    },
    "base-url-password": {"base_url": f"http://user:{SECRET}@127.0.0.1:9/v1"},
}
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def _salt(tmp_path, monkeypatch):
    monkeypatch.setenv(secrets.SALT_ENV, str(tmp_path / "salt"))


def _autointerp(leak: str, url: str | None = None) -> dict:
    """The leak's autointerp overrides, pointed at `url` (with the leak's
    userinfo for the base_url leak)."""
    over = copy.deepcopy(LEAKS[leak])
    if url is not None and leak == "base-url-password":
        over["base_url"] = url.replace("://", f"://user:{SECRET}@", 1)
    elif url is not None:
        over["base_url"] = url
    return over


# -- the rule ------------------------------------------------------------------


def test_known_safe_settings_keep_their_cache_keys():
    """Keys computed by the code before the rule was inverted (commit
    f9f6aec): an existing cache of known-safe settings still hits."""
    params = {
        "reasoning_effort": "low",
        "max_completion_tokens": 900,
        "seed": 3,
        "extra_headers": {
            "Authorization": "Bearer sk-x",
            "api-key": "k",
            "X-Key": {"env": "K"},
            "anthropic-beta": "b1",
        },
        "extra_body": {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}},
        "extra_query": {"api-version": "2024-10-21"},
    }
    want = {
        "4f5cf5a5471703a450301c5411c9f9d35000ece4dba41c7d4c1ff135be61fb95": {},
        "079f2acd7b825bf5acf4528ae6a2b86dcf05c27cbcea4b8540b65f2e3fcdf6c8": params,
    }
    for key, request_params in want.items():
        settings = replace(
            llm_settings(validate({})["autointerp"], "test"),
            provider="openai",
            request_params=request_params,
        )
        engine = LLMEngine(provider_for(settings, {}, None), None, "explain")
        engine._client = SimpleNamespace(base_url="http://127.0.0.1:8000/v1/")
        assert cache_key(engine._request("explain feature 0", 0)) == key
    assert not secrets.salt_path().exists()  # no digest needed, no salt made


def test_unknown_settings_are_digests_credentials_a_constant():
    params = {
        "reasoning_effort": "low",
        "user": "alice@example.com",
        "extra_headers": {"X-Org": "acme", "Ocp-Apim-Subscription-Key": "k1"},
        "extra_query": {"tenant": "t1", "api-version": "2024-10-21"},
    }
    out = redact(params)
    assert out["reasoning_effort"] == "low"
    assert out["extra_query"]["api-version"] == "2024-10-21"
    assert out["extra_headers"]["Ocp-Apim-Subscription-Key"] == REDACTED
    for value in (
        out["user"],
        out["extra_headers"]["X-Org"],
        out["extra_query"]["tenant"],
    ):
        assert value.startswith("<digest:") and value != REDACTED
    # A rotated credential records the same (the paid answers still hit); a
    # changed setting that may change the answer records differently.
    rotated = copy.deepcopy(params)
    rotated["extra_headers"]["Ocp-Apim-Subscription-Key"] = "k2"
    assert redact(rotated) == out
    rotated["extra_headers"]["X-Org"] = "other"
    assert redact(rotated)["extra_headers"]["X-Org"] != out["extra_headers"]["X-Org"]
    # 4 from a file and 4.0 from the command line are one setting.
    assert redact({"custom": 4}) == redact({"custom": 4.0})


def test_digest_is_stable_across_processes_and_salted(tmp_path, monkeypatch):
    code = (
        "from lorascope.core.secrets import redact;"
        "print(redact({'extra_headers': {'X-Org': 'acme'}}))"
    )

    def in_new_process(salt_file):
        env = {**os.environ, "PYTHONPATH": str(SRC), secrets.SALT_ENV: salt_file}
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True,
            check=True, cwd=tmp_path,
        ).stdout  # fmt: skip

    first = in_new_process(str(tmp_path / "a"))
    assert "acme" not in first and "<digest:" in first
    assert in_new_process(str(tmp_path / "a")) == first  # caches hit, no rerun
    assert in_new_process(str(tmp_path / "b")) != first  # salted per file
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o600


def test_salt_lives_in_the_working_directorys_snakemake_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(secrets.SALT_ENV)
    monkeypatch.chdir(tmp_path)
    redact({"custom": "x"})
    assert (tmp_path / ".snakemake" / "lorascope" / "salt").is_file()
    (tmp_path / ".snakemake" / "lorascope" / "salt").write_text("short\n")
    secrets._salt_at.cache_clear()
    with pytest.raises(RuntimeError, match=r"salt: not a lorascope salt"):
        redact({"custom": "x"})


def test_urls_lose_userinfo_and_query_credentials():
    assert scrub_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert (
        scrub_url("https://h/v1?api-version=2024%2D1")
        == "https://h/v1?api-version=2024%2D1"
    )
    assert scrub_url(f"https://me:{SECRET}@h:1/v1") == "https://h:1/v1"
    assert scrub_url(f"https://h/v1?code={SECRET}") == f"https://h/v1?code={REDACTED}"
    line = f'POST http://u:{SECRET}@h/v1/chat?t={SECRET}&api-version=1 "200 OK"'
    assert (
        scrub_text(line) == f'POST http://h/v1/chat?t={REDACTED}&api-version=1 "200 OK"'
    )


# -- every sink, every leak ----------------------------------------------------


@pytest.mark.parametrize("leak", LEAKS)
def test_recorded_params_holds_no_leak(leak):
    schema = load_schema()
    config = validate({"autointerp": _autointerp(leak)}, schema)
    for keys in (["autointerp"], ["autointerp.request_params", "autointerp.base_url"]):
        recorded = repr(declared(config, keys, schema))
        assert SECRET not in recorded
    # the job itself still gets the value it must send
    assert SECRET in declared(config, ["autointerp"], schema).as_json


@pytest.mark.parametrize("leak", LEAKS)
def test_resolved_config_holds_no_leak(leak, tmp_path):
    config = validate({"autointerp": _autointerp(leak)})
    write_provenance(tmp_path, config)
    text = (tmp_path / "resolved_config.yaml").read_text()
    assert SECRET not in text
    if leak == "base-url-password":
        assert "base_url: http://127.0.0.1:9/v1" in text
    else:  # the setting is there, its value hidden
        name = next(iter(next(iter(LEAKS[leak]["request_params"].values()))))
        assert f"{name}: " in text


def _client(server, leak, **kw):
    over = _autointerp(leak, server.openai_url)
    settings = replace(
        llm_settings(validate({"autointerp": over})["autointerp"], "test"),
        provider="openai",
        model="fake-model",
        api_key_env="",
        timeout_s=5.0,
        retries=0,
        **kw,
    )
    return provider_for(settings, {}, None)


def _assert_sent(server, leak):
    """The secret reached the server: it is used, only never written."""
    path, headers = server.requests[-1][0], server.headers[-1]
    if leak == "base-url-password":
        assert (
            headers["authorization"]
            == "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
        )
    elif leak == "extra-query":
        assert f"subscription-key={SECRET}" in path
    else:
        assert SECRET in headers.values()


@pytest.mark.parametrize("leak", LEAKS)
def test_llm_cache_holds_no_leak(leak, tmp_path):
    with FakeLLMServer() as server:
        for _ in range(2):  # the second run hits the cache: the record is stable
            out, usage = run_prompts(
                _client(server, leak), tmp_path / "cache.sqlite", "explain",
                [(0, "explain feature 0")], parse_explanation,
            )  # fmt: skip
        _assert_sent(server, leak)
    assert out[0].status == "ok" and usage[0]["cached"]
    assert len(server.requests) == 1
    files = list(tmp_path.glob("cache.sqlite*"))  # the database and its WAL
    assert files and all(SECRET.encode() not in f.read_bytes() for f in files)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    (request,) = cache._db.execute("SELECT request FROM responses").fetchone()
    cache.close()
    assert "127.0.0.1" in request and SECRET not in request


@pytest.mark.parametrize("leak", LEAKS)
def test_job_log_holds_no_leak(leak, tmp_path):
    log = tmp_path / "job.log"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with FakeLLMServer() as server:
            with script_logging(SimpleNamespace(log=[str(log)])):
                run_prompts(
                    _client(server, leak), tmp_path / "c.sqlite", "explain",
                    [(0, "explain feature 0")], parse_explanation,
                )  # fmt: skip
            _assert_sent(server, leak)
            # A rejected request: its error and traceback go to the log too.
            server._answer = lambda h, a, b: server._error(h, 401, "auth_error")
            with pytest.raises(LLMError, match="HTTP 401"):
                with script_logging(SimpleNamespace(log=[str(log) + ".2"])):
                    run_prompts(
                        _client(server, leak), tmp_path / "c.sqlite", "explain",
                        [(1, "explain feature 1")], parse_explanation,
                    )  # fmt: skip
    finally:  # script_logging took over the root logger
        root.handlers[:] = handlers
        root.setLevel(level)
    first, second = log.read_text(), Path(str(log) + ".2").read_text()
    assert "HTTP Request: POST http://127.0.0.1" in first  # httpx logged the URL
    assert "HTTP 401" in second and "127.0.0.1" in second
    assert SECRET not in first + second


def test_a_url_param_is_recorded_without_userinfo():
    """`setting("hub.endpoint")` (a param of its own, recorded by repr)."""
    import pickle

    url = f"https://me:{SECRET}@mirror.example/hf"
    param = recorded(url)
    assert repr(param) == "'https://mirror.example/hf'"
    assert param == url and pickle.loads(pickle.dumps(param)) == url  # the job's
    assert type(pickle.loads(pickle.dumps(param))) is str
    plain = "https://huggingface.co"
    assert repr(recorded(plain)) == repr(plain) and recorded(4) == 4


def test_clear_settings_are_checked_entry_by_entry_at_any_depth():
    """A known-safe setting is written in clear, but a credential-named
    entry or a credential-looking value anywhere inside it (nested dicts,
    lists under a credential's name) is still REDACTED; env references stay
    references, and a credential name with no value stays None."""
    params = {
        "chat_template_kwargs": {
            "api_key": "plain",
            "token": None,
            "nested": {"cookie": ["a", "b"], "keep": ["x", "sk-live"]},
            "env": {"env": "MY_VAR"},
        },
        "stop": ["END", "Bearer abc"],
        "extra_body": {"top_k": {"authorization": "x"}, "min_tokens": 3},
    }
    assert redact(params) == {
        "chat_template_kwargs": {
            "api_key": REDACTED,
            "token": None,
            "nested": {"cookie": [REDACTED, REDACTED], "keep": ["x", REDACTED]},
            "env": {"env": "MY_VAR"},
        },
        "stop": ["END", REDACTED],
        "extra_body": {"top_k": {"authorization": REDACTED}, "min_tokens": 3},
    }


def test_an_unknown_dict_setting_is_one_digest_not_entries():
    """Only the SDKs' own containers are read key by key; any other dict is
    an unknown setting, hidden whole."""
    out = redact({"my_extra": {"temperature": 1}, "extra_body": "not a dict"})
    assert out["my_extra"] == secrets.digest({"temperature": 1})
    assert out["extra_body"] == secrets.digest("not a dict")


def test_digest_is_sixteen_hex_digits_and_ignores_key_order_and_float_form():
    import re

    d = secrets.digest({"a": 1, "b": [2.0, {"c": "é"}]})
    assert re.fullmatch(r"<digest:[0-9a-f]{16}>", d)
    assert secrets.digest({"b": [2, {"c": "é"}], "a": 1.0}) == d
    assert secrets.digest({"x": {"b": 1, "a": 2}}) == secrets.digest(
        {"x": {"a": 2, "b": 1}}
    )
    # Any value digests, JSON or not (a path from a config, say).
    assert secrets.digest(Path("/p")) == secrets.digest("/p")
    # Keys are text: an int key and its string are the same setting.
    assert secrets.digest({1: "v"}) == secrets.digest({"1": "v"})
    assert secrets.digest({1: "v"}) != secrets.digest({2: "v"})
    assert secrets.digest({"a": 1}) != secrets.digest({"a": 2})
    assert secrets.digest([1]) != secrets.digest([2])


def test_digest_is_the_salted_hmac_of_the_canonical_json(tmp_path, monkeypatch):
    """From the definition: HMAC-SHA256 under the salt of the sorted-key,
    UTF-8 (not \\u-escaped) JSON, first 16 hex digits. Every LLM cache key
    made from a digest depends on this exact text."""
    import hashlib
    import hmac
    import json

    salt = tmp_path / "fixed"
    salt.write_text("ab" * 32 + "\n")
    monkeypatch.setenv(secrets.SALT_ENV, str(salt))
    value = {"z": "é", "a": [1.5, None]}
    blob = '{"a": [1.5, null], "z": "é"}'
    assert json.loads(blob) == value
    want = hmac.new(bytes.fromhex("ab" * 32), blob.encode(), hashlib.sha256)
    assert secrets.digest(value) == f"<digest:{want.hexdigest()[:16]}>"


def test_scrub_url_edge_cases():
    # A password holding "@": everything up to the last "@" is userinfo.
    assert scrub_url("https://u:p@ss@host.example/v1") == "https://host.example/v1"
    # A blank query value is a value: it is hidden too, not dropped.
    out = scrub_url("https://h.example/v1?api-version=1&key=&t=x", lambda v, k: "H")
    assert out == "https://h.example/v1?api-version=1&key=H&t=H"
    # Not a URL (no scheme, or no host): unchanged, byte for byte.
    for text in ("h.example/v1?key=x", "file:///tmp/a?key=x", "mailto:a@b?k=v"):
        assert scrub_url(text) == text


def test_scrub_config_scrubs_urls_inside_lists():
    cfg = {"mirrors": ["https://u:pw@m1.example/", "plain"], "n": [1]}
    assert secrets.scrub_config(cfg) == {
        "mirrors": ["https://m1.example/", "plain"],
        "n": [1],
    }
    # A list inside the secret subtree is still redacted as one setting.
    sub = {"autointerp": {"request_params": {"stop": ["sk-1"], "odd": [1]}}}
    assert secrets.scrub_config(sub)["autointerp"]["request_params"] == {
        "stop": [REDACTED],
        "odd": secrets.digest([1]),
    }
