"""LLM calls for the autointerp rules: async, cached, retried, budgeted.

`LLMEngine(client, cache, step).run(prompts, parse)` sends one chat request
per prompt through `client`, an `LLMProvider` of `providers.PROVIDERS` (it
builds the SDK client, sends one request and names the SDK's errors), at
most `concurrency` at a time. Transport failures (429 honouring retry-after,
5xx, timeouts, dropped connections) are retried with exponential backoff; a
reply `parse` rejects is asked for again (a new cache key per attempt), then
recorded as failed with its raw text. Replies are cached as they arrive: if
the API goes down midway (`LLMUnavailable`), the rerun makes only the missing
calls. One usage row per request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from lorascope.autointerp.cache import (
    BudgetExceeded,
    CachedReply,
    ResponseCache,
    cache_key,
)
from lorascope.autointerp.prompts import ParseError
from lorascope.autointerp.settings import resolve_env_refs
from lorascope.core.secrets import redact, scrub_text, scrub_url

__all__ = [
    "Outcome",
    "LLMEngine",
    "LLMError",
    "LLMUnavailable",
    "api_key",
    "retry_after",
    "run_prompts",
    "usage_frame",
]


# Request-specific rejections: recorded as a failed item, the run goes on.
_ITEM_STATUSES = (400, 413, 422)


class LLMError(RuntimeError):
    """A configuration-level failure (bad key, unknown model): stop the run."""


class LLMUnavailable(RuntimeError):
    """Transient failures outlasted the retries: stop; a rerun resumes."""


class _ItemRejected(Exception):
    pass


@dataclass
class Outcome:
    """One prompt's result: `value` from `parse`, or status failed + raw text."""

    item: Any
    value: Any = None
    status: str = "ok"
    raw: str | None = None
    error: str | None = None


def api_key(settings, default_env: str) -> str:
    """The key from the environment; a clear error naming the variable if unset.

    `api_key_env: ""` means the server needs no key (a local `vllm serve`);
    null means the provider's usual variable, `default_env`.
    """
    env = settings.api_key_env
    if env == "":
        return "EMPTY"
    env = env or default_env
    key = os.environ.get(env)
    if not key:
        raise RuntimeError(
            f"autointerp.provider is '{settings.provider}' but the environment "
            f"variable {env} is not set (autointerp.api_key_env). Set it, or set "
            "autointerp.provider: offline to use the offline explainer."
        )
    return key


def retry_after(exc: Exception) -> float | None:
    """Seconds a 429's retry-after(-ms) header asks for; None without one."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) * scale
            except ValueError:
                return None  # an HTTP date: fall back to our own backoff
    return None


class LLMEngine:
    def __init__(self, client, cache: ResponseCache, step: str):
        """`client`: an `LLMProvider` (its `settings`, `key_env`, `connect`,
        `send` and `errors`)."""
        self.llm = client
        self.settings = client.settings
        self.cache = cache
        self.step = step
        self.usage: list[dict] = []

    # -- public -----------------------------------------------------------
    def run(
        self, prompts: list[tuple[Any, str]], parse: Callable[[str], Any]
    ) -> list[Outcome]:
        """Outcomes in prompt order; raises LLMError/LLMUnavailable/BudgetExceeded."""
        return asyncio.run(self._run_all(prompts, parse))

    # -- internals --------------------------------------------------------
    async def _run_all(self, prompts, parse) -> list[Outcome]:
        self._client = self._make_client()
        self._sem = asyncio.Semaphore(self.settings.concurrency)
        self._stopped = False  # set by the first fatal error: send nothing more
        try:
            async with asyncio.TaskGroup() as group:
                # `parse` may be one parser per item (a dict): the simulation
                # judge checks each reply against its own windows' lengths.
                one = parse.get if isinstance(parse, dict) else lambda _: parse
                tasks = [group.create_task(self._one(i, p, one(i))) for i, p in prompts]
        except BaseExceptionGroup as eg:
            # Re-raise the root cause; the others were cancelled because of it.
            first = eg.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        finally:
            await self._client.close()
        return [t.result() for t in tasks]

    def _make_client(self):
        return self.llm.connect(api_key(self.settings, self.llm.key_env))

    def _request(self, prompt: str, attempt: int) -> dict:
        # All that can change the answer, as it may be written: request
        # settings through `redact` (known-safe ones in clear, as they always
        # were, so existing cache keys still hit; credentials REDACTED; the
        # rest salted digests), env refs by name, no userinfo in the endpoint.
        s = self.settings
        return {
            "provider": s.provider,
            "endpoint": scrub_url(str(self._client.base_url).rstrip("/")),
            "model": s.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_output_tokens": s.max_output_tokens,
            "temperature": s.temperature,
            "params": redact(s.request_params),
            "attempt": attempt,
        }

    async def _one(self, item, prompt: str, parse) -> Outcome:
        raw = None
        for attempt in range(self.settings.parse_retries + 1):
            try:
                raw = await self._complete(item, self._request(prompt, attempt))
            except _ItemRejected as exc:
                return Outcome(item, status="failed", error=str(exc))
            try:
                return Outcome(item, value=parse(raw), raw=raw)
            except ParseError as exc:
                error = f"malformed reply after {attempt + 1} attempts: {exc}"
        return Outcome(item, status="failed", raw=raw, error=error)

    async def _complete(self, item, request: dict) -> str:
        key = cache_key(request)
        hit = self.cache.get(key)
        if hit is not None:
            self._record(item, key, hit, cached=True, tries=0, waited=0.0, t0=None)
            return hit.text
        t0 = time.monotonic()
        async with self._sem:
            try:
                return await self._send_with_retries(item, key, request, t0)
            except (LLMError, LLMUnavailable, BudgetExceeded):
                self._stopped = True
                raise

    async def _send_with_retries(self, item, key, request, t0) -> str:
        s, waited = self.settings, 0.0
        status_errors, transient_errors = self.llm.errors()
        for tries in range(1, s.retries + 2):
            if self._stopped:  # another prompt already stopped the run
                raise asyncio.CancelledError
            ledger_id = self.cache.reserve(
                s.run, self.step, key, s.max_calls, s.max_tokens
            )
            try:
                reply = await self._send(request)
            except status_errors as exc:
                status = exc.status_code
                if status in _ITEM_STATUSES:
                    raise _ItemRejected(f"HTTP {status}: {exc.message}") from exc
                if status != 429 and status < 500:
                    raise LLMError(
                        scrub_text(
                            f"{s.provider} {s.model} at {s.base_url or 'default'} "
                            f"rejected the request: HTTP {status}: {exc.message}"
                        )
                    ) from exc
                last, wait = exc, retry_after(exc) if status == 429 else None
            except transient_errors as exc:
                last, wait = exc, None
            else:
                self.cache.settle(ledger_id, reply.input_tokens + reply.output_tokens)
                self.cache.put(key, request, reply)
                self._record(item, key, reply, False, tries, waited, t0)
                return reply.text
            if tries > s.retries:
                break
            if wait is None:
                wait = min(s.backoff_max_s, s.backoff_base_s * 2 ** (tries - 1))
            waited += wait
            await asyncio.sleep(wait)
        raise LLMUnavailable(
            scrub_text(
                f"{s.provider} {s.model} still failing after {s.retries + 1} "
                f"attempts ({type(last).__name__}: {last}); finished calls are "
                f"cached in {self.cache.path}, rerun to resume"
            )
        ) from last

    async def _send(self, request: dict) -> CachedReply:
        s, kwargs = self.settings, resolve_env_refs(self.settings.request_params)
        if s.temperature is not None:
            kwargs["temperature"] = s.temperature
        return await self.llm.send(self._client, request["messages"], kwargs)

    def _record(self, item, key, reply: CachedReply, cached, tries, waited, t0):
        self.usage.append(
            {
                "step": self.step,
                "item": str(item),
                "key": key,
                "provider": self.settings.provider,
                "model": self.settings.model,
                "cached": cached,
                "http_requests": tries,
                "retry_wait_s": waited,
                "latency_s": 0.0 if t0 is None else time.monotonic() - t0,
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
                "cost_usd": self.settings.cost(reply.input_tokens, reply.output_tokens),
            }
        )


def run_prompts(
    client,
    cache_path,
    step: str,
    prompts: list[tuple[Any, str]],
    parse: Callable[[str], Any],
) -> tuple[dict[Any, Outcome], list[dict]]:
    """Run `prompts` through a fresh engine for `client` (an `LLMProvider`):
    (item -> Outcome, usage rows)."""
    if not prompts:
        return {}, []
    cache = ResponseCache(cache_path)
    try:
        engine = LLMEngine(client, cache, step)
        outcomes = engine.run(prompts, parse)
    finally:
        cache.close()
    return {o.item: o for o in outcomes}, engine.usage


USAGE_SCHEMA = {
    "step": pl.String,
    "item": pl.String,
    "key": pl.String,
    "provider": pl.String,
    "model": pl.String,
    "cached": pl.Boolean,
    "http_requests": pl.Int64,
    "retry_wait_s": pl.Float64,
    "latency_s": pl.Float64,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "cost_usd": pl.Float64,
}


def usage_frame(rows: list[dict]) -> pl.DataFrame:
    """Per-call usage rows as a frame (empty, typed, for offline steps)."""
    return pl.DataFrame(rows, schema=USAGE_SCHEMA)
