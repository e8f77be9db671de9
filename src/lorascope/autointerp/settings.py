"""Client settings for the autointerp rules, read from the `autointerp:` config.

`llm_settings(section, run, role)` turns the validated config section (every
default and bound comes from workflow/schemas/config.schema.yaml, enforced by
`lorascope.core.config.validate`) into one frozen `LLMSettings`: role
`"explainer"` (explanations, assignments, detection judge; paper: gpt-5-mini)
or `"categorizer"` (category proposal; paper: claude-opus-4.1), the latter
taking provider/model/base_url/key/max output tokens from
`autointerp.categories`, where null follows the explainer
(`lorascope.core.roles.role_fields`): one key, or offline, serves every role.
`kind_section(section, kind)` applies `autointerp.kind_overrides.<kind>`
(the public code showed SAE features differently from LoRA directions and
MLP neurons).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lorascope.core.roles import role_fields

__all__ = [
    "LLMSettings",
    "kind_section",
    "llm_settings",
    "resolve_env_refs",
    "role_fields",
]


@dataclass(frozen=True)
class LLMSettings:
    """One role's settings; the schema documents and bounds every field."""

    provider: str
    """A key of `providers.PROVIDERS`: offline, openai, anthropic."""
    model: str
    base_url: str | None
    """None = the SDK's default endpoint."""
    api_key_env: str | None
    """Environment variable holding the key; None = the provider's usual one."""
    max_output_tokens: int | None
    temperature: float | None
    """None = do not send (reasoning models such as gpt-5-mini reject it)."""
    request_params: dict
    """Extra keyword arguments for the create call; part of the cache key.
    A value `{env: NAME}` is read from the environment when sent (the cache
    key and every record keep the name); only known-safe settings are
    written in clear (`lorascope.core.secrets.redact`)."""
    concurrency: int
    retries: int
    """Transport retries per request (429, 5xx, timeouts, dropped connections)."""
    parse_retries: int
    """Extra requests after a malformed reply before recording it as failed."""
    timeout_s: float
    backoff_base_s: float
    backoff_max_s: float
    max_calls: int | None
    max_tokens: int | None
    prices: dict
    """model -> {input_per_mtok, output_per_mtok} in USD, for cost estimates."""
    run: str
    """Ledger tag: the budget caps count every request sent for this run."""

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        price = self.prices.get(self.model)
        if price is None:
            return None
        return (
            input_tokens * float(price["input_per_mtok"])
            + output_tokens * float(price["output_per_mtok"])
        ) / 1e6


def kind_section(section: dict, kind: str) -> dict:
    """The autointerp section as one kind sees it: its non-null overrides win
    (the schema lists the keys `autointerp.kind_overrides.<kind>` may set)."""
    over = (section.get("kind_overrides") or {}).get(kind) or {}
    return {**section, **{k: v for k, v in over.items() if v is not None}}


def llm_settings(section: dict, run: str, role: str = "explainer") -> LLMSettings:
    """Settings for one role from the validated `autointerp` config section.

    Reads only what the role uses (the categorizer's provider, model, endpoint,
    key and output cap come from `autointerp.categories`), so a rule declares
    exactly those keys (workflow/rules/common.smk).
    """
    picked = role_fields(section, role)
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
