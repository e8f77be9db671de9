"""Secrets in config values, redacted wherever a value would be written
(the recorded params, resolved configs, the LLM cache, logs).

Used by `lorascope.workflow.wiring` (what Snakemake records), by
`lorascope.core.config` (resolved configs beside artifacts) and by the
autointerp clients.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "SECRET_SUBTREES", "redact"]

# Free-form request parameters are sent to the LLM API as given; anything in
# them that looks like a credential is redacted wherever it would be written.
SECRET_SUBTREES = ("autointerp.request_params",)
REDACTED = "<redacted>"
_SECRET_NAME = re.compile(
    r"(?i)^(x-)?(api[-_]?key|(proxy-)?authori[sz]ation|pass(word|wd)|"
    r"(client[-_])?secret|((access|auth|bearer|id|refresh)[-_])?token|cookie)$"
)
_SECRET_VALUE = re.compile(r"^(sk-|sk_|Bearer\s|Basic\s|xox[abprs]-|gh[pousr]_|hf_)")


def _is_env_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"env"}


def redact(value: Any, name: str = "") -> Any:
    """`value` with credential-looking entries replaced by REDACTED.

    A value counts as a secret when its key looks like one (api_key,
    Authorization, token, ...) or its text does (sk-..., Bearer ...).
    `{env: NAME}` references are names, not secrets, and stay.
    """
    if _is_env_ref(value):
        return dict(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, name) for v in value]
    if _SECRET_NAME.match(name) and value is not None:
        return REDACTED
    if isinstance(value, str) and _SECRET_VALUE.match(value):
        return REDACTED
    return value
