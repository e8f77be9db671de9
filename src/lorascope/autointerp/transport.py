"""What the LLM clients need to know about HTTP failures: which SDK errors
are worth a retry, and how long a 429 asks us to wait. The SDKs are imported
on first use: the import takes seconds that the offline explainer's jobs
never need."""

from __future__ import annotations

import json

__all__ = ["retry_after", "sdk_errors"]


def sdk_errors() -> tuple[tuple, tuple]:
    """(status, transient) errors of both SDKs. Transient ones are retried
    with backoff; a 200 whose body is not JSON is one."""
    import anthropic
    import openai

    return (openai.APIStatusError, anthropic.APIStatusError), (
        openai.APIConnectionError, anthropic.APIConnectionError,
        openai.APIResponseValidationError, anthropic.APIResponseValidationError,
        json.JSONDecodeError,
    )  # fmt: skip


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
