"""Which LLM serves each autointerp role, from the `autointerp:` config.

The explainer (explanations, assignments, detection judge) is
`autointerp.provider`/`model`/...; the categorizer (category proposal) is
`autointerp.categories.*`, where a null provider is the explainer's and a null
model, base_url or api_key_env is the explainer's when it uses the
explainer's provider: one key, or offline, serves every role. Read by config
validation (`lorascope.core.checks`), the environment check before any job
(`lorascope.workflow.environment`) and the autointerp clients
(`lorascope.autointerp.settings`). Imports nothing: a rule that reads it
needs no other package.
"""

from __future__ import annotations

__all__ = ["FOLLOWS_EXPLAINER", "ROLE_FIELDS", "categorizer_problem", "role_fields"]

ROLE_FIELDS = ("provider", "model", "base_url", "api_key_env", "max_output_tokens")
# What the categorizer takes from the explainer when its own value is null
# (and, but for the provider, only when it uses the explainer's provider).
FOLLOWS_EXPLAINER = ("provider", "model", "base_url", "api_key_env")


def categorizer_problem(autointerp: dict) -> str | None:
    """A null autointerp.categories.model follows the explainer's model only
    with the explainer's provider (`role_fields`)."""
    own, explainer = autointerp["categories"]["provider"], autointerp["provider"]
    if own in (None, explainer, "offline") or autointerp["categories"]["model"]:
        return None
    return (
        "autointerp.categories.model: null follows the explainer's model only "
        f"with the explainer's provider, and autointerp.categories.provider is "
        f"{own!r}, autointerp.provider {explainer!r}: name the proposal model, "
        "or set autointerp.categories.provider to null"
    )


def role_fields(section: dict, role: str) -> dict:
    """provider, model, base_url, api_key_env, max_output_tokens of one role.

    The categorizer's null provider is the explainer's; its null model,
    base_url and api_key_env are the explainer's when it uses the explainer's
    provider, else the SDK default / the provider's usual key variable (a
    null model with another provider is refused, naming the key)."""
    if role not in ("explainer", "categorizer"):
        raise ValueError(f"unknown autointerp role '{role}'")
    if role == "explainer":
        return {k: section[k] for k in ROLE_FIELDS}
    own = section["categories"]
    out = {k: own[k] for k in ROLE_FIELDS}
    out["provider"] = own["provider"] or section["provider"]
    if out["provider"] == section["provider"]:
        for key in FOLLOWS_EXPLAINER[1:]:
            out[key] = section[key] if own[key] is None else own[key]
    elif out["model"] is None:
        problem = categorizer_problem(section)
        if problem:
            raise ValueError(problem)
        out["model"] = "offline"  # offline answers without a model
    return out
