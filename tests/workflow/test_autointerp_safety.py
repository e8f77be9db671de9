"""Paid LLM calls: never a stale answer, never a written secret, never a job
that outlives a killed snakemake. Against real HTTP servers on 127.0.0.1."""

import json
import os
import signal
import subprocess
import time
from dataclasses import replace

import pytest
import wfrun
from fake_llm_server import FakeLLMServer

from lorascope.autointerp.clients import run_prompts
from lorascope.autointerp.prompts import parse_explanation
from lorascope.autointerp.providers import provider_for
from lorascope.autointerp.settings import llm_settings
from lorascope.core.config import validate

pytestmark = pytest.mark.timeout(900)

UP_TO_ACTIVATIONS = ["toy", "data", "train/rank1/adapter", "components.parquet"]
UP_TO_ACTIVATIONS += ["activations", "features"]
TARGET = "autointerp/explanations/lora.parquet"
LITERAL_SECRET = "sk-literal-0123456789"
ENV_SECRET = "sk-from-env-9876543210"


def _answer(text):
    def responder(prompt):
        return json.dumps(
            {"explanation": text, "classification": 0, "classification_reasoning": "r"}
        )

    return responder


def _settings(server, **kw):
    """An openai client with the schema's defaults and these overrides."""
    settings = replace(
        llm_settings(validate({})["autointerp"], "test"),
        provider="openai",
        model="same-name",
        base_url=server.openai_url,
        api_key_env="",
        timeout_s=5.0,
        retries=0,
        **kw,
    )
    return provider_for(settings, {}, None)


def test_cache_key_holds_endpoint_and_params_not_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("LS_HEADER_SECRET", ENV_SECRET)
    cache, prompts = tmp_path / "cache.sqlite", [(0, "explain feature 0")]
    headers = {"Authorization": f"Bearer {LITERAL_SECRET}"}
    headers["X-Key"] = {"env": "LS_HEADER_SECRET"}
    with (
        FakeLLMServer(_answer("from one")) as one,
        FakeLLMServer(_answer("from two")) as two,
    ):

        def explain(server, **params):
            out, usage = run_prompts(
                _settings(server, request_params=params),
                cache,
                "explain",
                prompts,
                parse_explanation,
            )
            return out[0].value["explanation"], usage[0]["cached"]

        assert explain(one) == ("from one", False)
        assert explain(one) == ("from one", True)
        # Same model name, another endpoint: its own answer, never the cache's.
        assert explain(two) == ("from two", False)
        # Every request parameter is part of the key.
        assert explain(two, reasoning_effort="low") == ("from two", False)
        assert explain(two, reasoning_effort="low") == ("from two", True)
        assert len(two.requests) == 2
        # Credentials are sent, yet a new key reuses the paid answer.
        assert explain(one, extra_headers=headers) == ("from one", False)
        sent = one.headers[-1]
        assert sent["authorization"] == f"Bearer {LITERAL_SECRET}"
        assert sent["x-key"] == ENV_SECRET
        monkeypatch.setenv("LS_HEADER_SECRET", "sk-rotated")
        rotated = headers | {"Authorization": "Bearer sk-rotated-literal"}
        assert explain(one, extra_headers=rotated) == ("from one", True)
    for path in tmp_path.iterdir():  # the database and its WAL files
        data = path.read_bytes()
        assert LITERAL_SECRET.encode() not in data and ENV_SECRET.encode() not in data


def _all_bytes(work):
    """Every file the run wrote (results, logs, snakemake's metadata)."""
    for top in ("results", "logs", ".snakemake"):
        for path in (work / top).rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path, path.read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return wfrun.reference_run(tmp_path_factory.getbasetemp())


def _llm_overrides(server, **extra):
    return {
        "autointerp": {
            "provider": "openai",
            "model": "fake-model",
            "base_url": server.openai_url,
            "api_key_env": "",
            "timeout_s": 60,
            "retries": 0,
            **extra,
        }
    }


# Issue 33, item 9: names no pattern guessed as secret, and a URL password.
AZURE_SECRET, CUSTOM_SECRET = "azure-0123456789", "custom-auth-0123456789"
QUERY_SECRET, URL_SECRET = "query-0123456789", "url-pass-0123456789"


def test_secrets_in_request_params_are_never_written(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("LS_HEADER_SECRET", ENV_SECRET)
    headers = {
        "Authorization": f"Bearer {LITERAL_SECRET}",
        "X-Key": {"env": "LS_HEADER_SECRET"},
        "Ocp-Apim-Subscription-Key": AZURE_SECRET,
        "X-Custom-Auth": CUSTOM_SECRET,
    }
    params = {"extra_headers": headers, "extra_query": {"tenant": QUERY_SECRET}}
    with FakeLLMServer() as server:
        over = _llm_overrides(server, request_params=params)
        url = over["autointerp"]["base_url"]
        over["autointerp"]["base_url"] = url.replace("://", f"://me:{URL_SECRET}@")
        work = wfrun.clone(reference, tmp_path / "w", UP_TO_ACTIVATIONS, over)
        proc = wfrun.snakemake(work, [wfrun.target(TARGET)])
        # The digests are stable: a new snakemake process reruns nothing.
        again = wfrun.snakemake(work, [wfrun.target(TARGET)], extra=["-n"])
    assert wfrun.job_stats(again.stdout) is None, again.stdout[-2000:]
    assert server.requests, "no request reached the server"
    sent = server.headers[0]
    assert sent["authorization"].startswith("Basic ")  # from the URL's userinfo
    assert sent["x-key"] == ENV_SECRET
    assert sent["ocp-apim-subscription-key"] == AZURE_SECRET
    assert sent["x-custom-auth"] == CUSTOM_SECRET
    assert f"tenant={QUERY_SECRET}" in server.requests[0][0]
    written = list(_all_bytes(work))
    assert any(p.name == "lora.parquet" for p, _ in written)
    assert any("metadata" in p.parts for p, _ in written)
    assert (work / ".snakemake" / "lorascope" / "salt").is_file()
    secrets = (LITERAL_SECRET, ENV_SECRET, AZURE_SECRET, CUSTOM_SECRET)
    for secret in (*secrets, QUERY_SECRET, URL_SECRET):
        assert secret not in proc.stdout + proc.stderr
        leaks = [str(p) for p, data in written if secret.encode() in data]
        assert not leaks, f"{secret} written to {leaks}"


def test_llm_job_stops_when_snakemake_is_killed(reference, tmp_path):
    # Every reply takes 30 s, so the job is mid-request when snakemake dies.
    with FakeLLMServer(script=["hang:30"] * 500) as server:
        work = wfrun.clone(
            reference,
            tmp_path / "w",
            UP_TO_ACTIVATIONS,
            _llm_overrides(server, concurrency=2),
        )
        proc = subprocess.Popen(
            wfrun.command(work, [wfrun.target(TARGET)]),
            cwd=work,
            env=wfrun.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 600
            while not server.requests and time.monotonic() < deadline:
                assert proc.poll() is None, "snakemake ended before any request"
                time.sleep(0.2)
            jobs = [
                p for p in wfrun.descendants(proc.pid)
                if "autointerp_explain" in wfrun.cmdline(p)
            ]  # fmt: skip
            assert jobs, "no autointerp job process found"
            os.kill(proc.pid, signal.SIGKILL)  # snakemake alone, as the OOM killer
            proc.wait()
            gone = time.monotonic() + 15
            while any(wfrun.cmdline(p) for p in jobs) and time.monotonic() < gone:
                time.sleep(0.2)
            alive = [p for p in jobs if wfrun.cmdline(p)]
            sent = len(server.requests)
            time.sleep(2)
            assert not alive, "the autointerp job outlived the killed snakemake"
            assert len(server.requests) == sent, "requests went on after the kill"
        finally:
            for pid in [proc.pid, *wfrun.descendants(proc.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    log = work / "logs" / wfrun.run_name(work) / "autointerp" / "explain_lora.log"
    assert "snakemake (pid" in log.read_text() and "is gone" in log.read_text()
