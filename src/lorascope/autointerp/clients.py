"""LLM calls for the autointerp rules: async, cached, retried, budgeted.

`LLMEngine(settings, cache, step).run(prompts, parse)` sends one chat request
per prompt through the `openai` SDK (any OpenAI-compatible base_url) or the
`anthropic` SDK, at most `concurrency` at a time. Transport failures (429
honouring retry-after, 5xx, timeouts, dropped connections) are retried with
exponential backoff; a reply `parse` rejects is asked for again (a new cache
key per attempt), then recorded as failed with its raw text. Replies are
cached as they arrive: if the API goes down midway (`LLMUnavailable`), the
rerun makes only the missing calls. One usage row per request.
"""

from __future__ import annotations

import asyncio
import importlib
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
from lorascope.autointerp.settings import LLMSettings, api_key, resolve_env_refs
from lorascope.autointerp.transport import retry_after, sdk_errors
from lorascope.core.secrets import redact

__all__ = [
    "Outcome",
    "LLMEngine",
    "LLMError",
    "LLMUnavailable",
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


class LLMEngine:
    def __init__(self, settings: LLMSettings, cache: ResponseCache, step: str):
        if settings.offline:
            raise ValueError("LLMEngine needs provider openai or anthropic")
        self.settings = settings
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
                tasks = [group.create_task(self._one(i, p, parse)) for i, p in prompts]
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
        s = self.settings
        common = dict(
            api_key=api_key(s), base_url=s.base_url, timeout=s.timeout_s, max_retries=0
        )
        sdk = importlib.import_module(s.provider)  # openai or anthropic
        client = sdk.AsyncOpenAI if s.provider == "openai" else sdk.AsyncAnthropic
        return client(**common)

    def _request(self, prompt: str, attempt: int) -> dict:
        # All that can change the answer; credentials redacted, env refs by name.
        s = self.settings
        return {
            "provider": s.provider,
            "endpoint": str(self._client.base_url).rstrip("/"),
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
        status_errors, transient_errors = sdk_errors()
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
                        f"{s.provider} {s.model} at {s.base_url or 'default'} "
                        f"rejected the request: HTTP {status}: {exc.message}"
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
            f"{s.provider} {s.model} still failing after {s.retries + 1} attempts "
            f"({type(last).__name__}: {last}); finished calls are cached in "
            f"{self.cache.path}, rerun to resume"
        ) from last

    async def _send(self, request: dict) -> CachedReply:
        s, kwargs = self.settings, resolve_env_refs(self.settings.request_params)
        if s.temperature is not None:
            kwargs["temperature"] = s.temperature
        if s.provider == "openai":
            if s.max_output_tokens:
                kwargs["max_completion_tokens"] = s.max_output_tokens
            resp = await self._client.chat.completions.create(
                model=s.model, messages=request["messages"], **kwargs
            )
            text = resp.choices[0].message.content or ""
            usage = resp.usage
            return CachedReply(
                text,
                int(getattr(usage, "prompt_tokens", 0) or 0),
                int(getattr(usage, "completion_tokens", 0) or 0),
            )
        resp = await self._client.messages.create(
            model=s.model,
            messages=request["messages"],
            max_tokens=s.max_output_tokens,
            **kwargs,
        )
        text = "".join(getattr(b, "text", "") for b in resp.content)
        return CachedReply(
            text, int(resp.usage.input_tokens), int(resp.usage.output_tokens)
        )

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
    settings: LLMSettings,
    cache_path,
    step: str,
    prompts: list[tuple[Any, str]],
    parse: Callable[[str], Any],
) -> tuple[dict[Any, Outcome], list[dict]]:
    """Run `prompts` through a fresh engine: (item -> Outcome, usage rows)."""
    if not prompts:
        return {}, []
    cache = ResponseCache(cache_path)
    try:
        engine = LLMEngine(settings, cache, step)
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
