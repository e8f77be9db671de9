"""Client settings for the autointerp rules, read from the `autointerp:` config.

`llm_settings(section, run, role)` turns the validated config section into one
frozen `LLMSettings`: role `"explainer"` (explanations, assignments, detection
judge; paper: gpt-5-mini) or `"categorizer"` (category proposal; paper:
claude-opus-4.1), the latter overriding provider/model/base_url/key/max
output tokens from `autointerp.categories`. `kind_section(section, kind)`
applies `autointerp.kind_overrides.<kind>` (the public code showed SAE
features differently from LoRA directions and MLP neurons).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "KIND_KEYS",
    "LLMSettings",
    "api_key",
    "kind_section",
    "llm_settings",
    "resolve_env_refs",
]

Provider = Literal["offline", "openai", "anthropic"]
_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_ROLE_OVERRIDES = ("provider", "model", "base_url", "api_key_env", "max_output_tokens")


@dataclass(frozen=True)
class LLMSettings:
    provider: Provider
    """offline (statistics, no calls), openai (any compatible base_url), anthropic."""
    model: str
    base_url: str | None = None
    """None = the SDK's default endpoint."""
    api_key_env: str | None = None
    """Environment variable holding the key; None = the provider's usual one."""
    max_output_tokens: int | None = 2000
    temperature: float | None = None
    """None = do not send (reasoning models such as gpt-5-mini reject it)."""
    request_params: dict = field(default_factory=dict)
    """Extra keyword arguments for the create call; part of the cache key.
    A value `{env: NAME}` is read from the environment when sent (the cache
    key and every record keep the name); credential-looking values are
    redacted wherever they are written."""
    concurrency: int = 8
    retries: int = 5
    """Transport retries per request (429, 5xx, timeouts, dropped connections)."""
    parse_retries: int = 2
    """Extra requests after a malformed reply before recording it as failed."""
    timeout_s: float = 120.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_calls: int | None = None
    max_tokens: int | None = None
    prices: dict = field(default_factory=dict)
    """model -> {input_per_mtok, output_per_mtok} in USD, for cost estimates."""
    run: str = "run"
    """Ledger tag: the budget caps count every request sent for this run."""

    def __post_init__(self):
        if self.provider not in ("offline", "openai", "anthropic"):
            raise ValueError(
                f"autointerp.provider: '{self.provider}' is not one of "
                "offline, openai, anthropic"
            )
        if self.concurrency < 1:
            raise ValueError("autointerp.concurrency must be >= 1")
        if self.provider == "anthropic" and not self.max_output_tokens:
            raise ValueError(
                "autointerp.max_output_tokens is required by the anthropic API"
            )

    @property
    def offline(self) -> bool:
        return self.provider == "offline"

    @property
    def label(self) -> str:
        """What every output records in its `explainer` column."""
        return "offline" if self.offline else f"{self.provider}:{self.model}"

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        price = self.prices.get(self.model)
        if price is None:
            return None
        return (
            input_tokens * float(price["input_per_mtok"])
            + output_tokens * float(price["output_per_mtok"])
        ) / 1e6


# Keys `autointerp.kind_overrides.<kind>` may set for one kind of feature.
KIND_KEYS = (
    "n_contexts",
    "example_window",
    "shuffle_examples",
    "max_examples_per_doc",
    "max_output_tokens",
)


def kind_section(section: dict, kind: str) -> dict:
    """The autointerp section as one kind sees it: its non-null overrides win."""
    over = (section.get("kind_overrides") or {}).get(kind) or {}
    unknown = sorted(set(over) - set(KIND_KEYS))
    if unknown:
        raise ValueError(f"autointerp.kind_overrides.{kind}: unknown keys {unknown}")
    return {**section, **{k: v for k, v in over.items() if v is not None}}


def llm_settings(section: dict, run: str, role: str = "explainer") -> LLMSettings:
    """Settings for one role from the validated `autointerp` config section.

    Reads only what the role uses (the categorizer's provider, model, endpoint,
    key and output cap come from `autointerp.categories`), so a rule declares
    exactly those keys (workflow/rules/common.smk).
    """
    if role not in ("explainer", "categorizer"):
        raise ValueError(f"unknown autointerp role '{role}'")
    source = section["categories"] if role == "categorizer" else section
    picked = {k: source[k] for k in _ROLE_OVERRIDES}
    budget = section["budget"]
    return LLMSettings(
        **picked,
        temperature=section["temperature"],
        request_params=dict(section["request_params"]),
        concurrency=int(section["concurrency"]),
        retries=int(section["retries"]),
        parse_retries=int(section["parse_retries"]),
        timeout_s=float(section["timeout_s"]),
        backoff_base_s=float(section["backoff_base_s"]),
        backoff_max_s=float(section["backoff_max_s"]),
        max_calls=budget["max_calls"],
        max_tokens=budget["max_tokens"],
        prices=dict(section["prices"]),
        run=run,
    )


def api_key(settings: LLMSettings) -> str:
    """The key from the environment; a clear error naming the variable if unset.

    `api_key_env: ""` means the server needs no key (a local `vllm serve`).
    """
    env = settings.api_key_env
    if env == "":
        return "EMPTY"
    env = env or _DEFAULT_KEY_ENV[settings.provider]
    key = os.environ.get(env)
    if not key:
        raise RuntimeError(
            f"autointerp.provider is '{settings.provider}' but the environment "
            f"variable {env} is not set (autointerp.api_key_env). Set it, or set "
            "autointerp.provider: offline to use the offline explainer."
        )
    return key


def resolve_env_refs(value, where: str = "autointerp.request_params"):
    """`value` with every `{env: NAME}` replaced by that variable's value."""
    if isinstance(value, dict) and set(value) == {"env"}:
        got = os.environ.get(value["env"])
        if not got:
            raise RuntimeError(
                f"{where}: environment variable {value['env']} is not set"
            )
        return got
    if isinstance(value, dict):
        return {k: resolve_env_refs(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env_refs(v, where) for v in value]
    return value
