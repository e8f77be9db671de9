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
    """Missing API keys and environment references for the LLM roles used,
    and, when any is missing, one closing line with every way out.

    `steps`: the autointerp rules about to run (None = all). The explainer
    serves explain/assign/score, the categorizer the categories rule; a
    categorizer set to null follows the explainer (one key serves both).
    """
    from lorascope.autointerp.providers import PROVIDERS
    from lorascope.core.roles import role_fields

    ai = config["autointerp"]
    roles = []
    if steps is None or steps & {
        "autointerp_explain",
        "autointerp_assign",
        "autointerp_score",
    }:
        roles.append(("autointerp", "explainer"))
    if steps is None or "autointerp_categories" in steps:
        roles.append(("autointerp.categories", "categorizer"))
    out, used, missing = [], False, {}
    for key, role in roles:
        try:
            fields = role_fields(ai, role)
        except ValueError as err:  # a null model with another provider
            out.append(str(err))
            continue
        provider = fields["provider"]
        default_env = PROVIDERS[provider].key_env
        if default_env is None:  # answers without calls (offline)
            continue
        used, env = True, fields["api_key_env"]
        if env == "":  # a local server that takes no key
            continue
        env = env or default_env
        if os.environ.get(env) or env in missing:
            continue
        missing[env] = key
        follows = ai["categories"]["provider"] is None
        if role == "categorizer" and follows:
            what = f"null, following autointerp.provider {provider!r},"
        elif role == "explainer" and follows and len(roles) == 2:
            what = f"{provider!r} (the category proposal follows it)"
        else:
            what = repr(provider)
        out.append(
            f"{key}.api_key_env: {key}.provider is {what} but the environment "
            f"variable {env} is not set"
        )
    if used:  # both roles send autointerp.request_params
        for where, name in _env_refs(ai["request_params"], "autointerp.request_params"):
            if not os.environ.get(name):
                out.append(f"{where}: environment variable {name} is not set")
    if missing:
        out.append(_ways_out(ai, list(missing)))
    return out


def _ways_out(ai: dict, names: list[str]) -> str:
    """Everything a user can set to start, in one line."""
    own = ai["categories"]["provider"]
    offline = "{provider: offline}"
    if own not in (None, "offline"):
        offline = "{provider: offline, categories: {provider: offline}}"
    ways = [f"export {' and '.join(names)}"]
    if own not in (None, ai["provider"]):
        ways.append(
            "or use one provider for every role: autointerp.categories.provider "
            "and .model null follow autointerp.provider (as config/one_gpu.yaml "
            "does), so one key serves both"
        )
    ways.append(f"or run without LLM calls: --config 'autointerp={offline}'")
    return "autointerp: " + "; ".join(ways)
