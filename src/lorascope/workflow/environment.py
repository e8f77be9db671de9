"""The environment the scheduled jobs need, checked before any job starts.

Used by the `onstart` hook in `workflow/rules/common.smk`: API keys and
environment references of the LLM providers the scheduled jobs use, checked
when jobs are about to run, so a dry run or a training-only run needs no key.
Every message starts with the key path. The providers and their usual key
variables come from the autointerp provider table
(`lorascope.autointerp.providers.PROVIDERS`), imported when the check runs,
not while the Snakefile is parsed (it imports polars; no SDK, no torch).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["check_environment"]


def _env_refs(value: Any, key: str):
    if isinstance(value, dict) and set(value) == {"env"}:
        yield key, value["env"]
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _env_refs(v, f"{key}.{k}")


def check_environment(config: dict, steps: set[str] | None = None) -> list[str]:
    """Missing API keys and environment references for the LLM roles used.

    `steps`: the autointerp rules about to run (None = all). The explainer
    serves explain/assign/score, the categorizer the categories rule.
    """
    from lorascope.autointerp.providers import PROVIDERS

    ai = config["autointerp"]
    roles = []
    if steps is None or steps & {
        "autointerp_explain",
        "autointerp_assign",
        "autointerp_score",
    }:
        roles.append(("autointerp", ai))
    if steps is None or "autointerp_categories" in steps:
        roles.append(("autointerp.categories", ai["categories"]))
    out, used = [], False
    for key, role in roles:
        provider = role["provider"]
        default_env = PROVIDERS[provider].key_env
        if default_env is None:  # answers without calls (offline)
            continue
        used, env = True, role["api_key_env"]
        if env == "":  # a local server that takes no key
            continue
        env = env or default_env
        if not os.environ.get(env):
            out.append(
                f"{key}.api_key_env: {key}.provider is {provider!r} but the "
                f"environment variable {env} is not set (export it, or set the "
                "provider to offline)"
            )
    if used:  # both roles send autointerp.request_params
        for where, name in _env_refs(ai["request_params"], "autointerp.request_params"):
            if not os.environ.get(name):
                out.append(f"{where}: environment variable {name} is not set")
    return out
