"""Secrets in config values: only known-safe request settings are ever
written (or used in a cache key) in clear.

Used by `lorascope.workflow.wiring` (what Snakemake records), by
`lorascope.core.config` (resolved configs beside artifacts), by
`lorascope.core.runtime` (job logs) and by the autointerp clients (the LLM
cache's keys and records).

`autointerp.request_params` is free-form: whatever a provider needs goes in
it, credentials included (an Azure `Ocp-Apim-Subscription-Key` header, a
gateway's `X-Custom-Auth`, an `extra_query` code). Guessing which names are
secret misses some, so the rule is the other way round. `redact(params)`
records an entry

- in clear when its name is a known request setting (`SAFE_PARAMS`; headers
  `SAFE_HEADERS`, query keys `SAFE_QUERY`, vLLM body keys `SAFE_BODY`), as it
  always was, so the response-cache keys of such settings are unchanged;
- as `REDACTED` when its name says it is a credential (`_CREDENTIAL`): a
  credential authorises a call, it does not change its answer, so a rotated
  key still hits the cache;
- otherwise as a salted digest (`digest`): it may change the answer, so it
  stays part of the cache key and of what Snakemake compares, but never in
  clear.

`{env: NAME}` references are names, not secrets, and are kept as they are.
URLs lose their userinfo (`https://user:password@host` -> `https://host`)
wherever they are written (`scrub_url`, `scrub_text`), and their query values
follow the same rule as `extra_query`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import re
import secrets as _random
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "SAFE_PARAMS",
    "SALT_ENV",
    "SECRET_SUBTREES",
    "digest",
    "redact",
    "salt_path",
    "scrub_config",
    "scrub_text",
    "scrub_url",
]

# Free-form request parameters are sent to the LLM API as given and recorded
# through `redact`.
SECRET_SUBTREES = ("autointerp.request_params",)
REDACTED = "<redacted>"

# Create-call settings of the openai and anthropic SDKs that never hold a
# credential: recorded in clear (the values inside are still checked for
# credential-looking text, as before).
SAFE_PARAMS = frozenset(
    {
        "reasoning_effort", "reasoning", "verbosity", "thinking",
        "max_tokens", "max_completion_tokens", "max_output_tokens",
        "temperature", "top_p", "top_k", "min_p", "seed", "n", "stop",
        "stop_sequences", "frequency_penalty", "presence_penalty",
        "repetition_penalty", "logprobs", "top_logprobs", "logit_bias",
        "response_format", "service_tier", "parallel_tool_calls", "store",
        "timeout", "chat_template_kwargs",
    }
)  # fmt: skip
# Extra fields a vLLM (or other compatible) server reads from the body.
SAFE_BODY = SAFE_PARAMS | {
    "min_tokens", "ignore_eos", "skip_special_tokens", "length_penalty",
    "include_stop_str_in_output", "spaces_between_special_tokens",
    "guided_json", "guided_regex", "guided_choice", "guided_grammar",
    "structured_outputs", "add_generation_prompt", "continue_final_message",
}  # fmt: skip
SAFE_HEADERS = frozenset({"anthropic-version", "anthropic-beta", "openai-beta"})
SAFE_QUERY = frozenset({"api-version"})
# The containers the SDKs accept, checked key by key against their own list.
_CONTAINERS = {
    "extra_headers": (SAFE_HEADERS, str.lower),
    "extra_query": (SAFE_QUERY, str.lower),
    "extra_body": (SAFE_BODY, str),
}

# Names of credentials: recorded as REDACTED (a constant), so a rotated key
# reuses the cache. Broad on purpose: a false match only hides a value.
_CREDENTIAL = re.compile(
    r"(?i)(key|auth|token|secret|pass(word|wd)?|cookie|credential|signature|sig$|"
    r"^code$|session|bearer)"
)
# Text that is a credential whatever its name (kept from the first rule).
_SECRET_VALUE = re.compile(r"^(sk-|sk_|Bearer\s|Basic\s|xox[abprs]-|gh[pousr]_|hf_)")
# The name rule the clear values are checked with (the first rule's, so the
# clear records, and the cache keys made from them, are what they were).
_SECRET_NAME = re.compile(
    r"(?i)^(x-)?(api[-_]?key|(proxy-)?authori[sz]ation|pass(word|wd)|"
    r"(client[-_])?secret|((access|auth|bearer|id|refresh)[-_])?token|cookie)$"
)

SALT_ENV = "LORASCOPE_SALT_FILE"
_SALT_DEFAULT = Path(".snakemake") / "lorascope" / "salt"


def salt_path() -> Path:
    """Where the salt of `digest` lives: `$LORASCOPE_SALT_FILE`, else
    `.snakemake/lorascope/salt` in the working directory.

    Why there: the digests are compared by Snakemake against its records in
    `.snakemake/metadata` and looked up in the LLM cache of the same working
    directory, so the salt lives beside those records (one random file per
    working directory, made on first use, mode 0600). It is never in the
    repository nor under `results/`, which is what gets shared or published
    with its resolved configs and cache, so a digest there cannot be
    brute-forced back into a short secret. Moving or copying the working
    directory whole (`.snakemake` included) keeps it, so nothing reruns and
    the cache still hits; a fresh `.snakemake` means a new salt, so
    digest-recorded settings (never credentials, which are REDACTED) miss
    the cache once. Working directories that share one LLM cache can share
    one salt through `LORASCOPE_SALT_FILE`.
    """
    return Path(os.environ.get(SALT_ENV) or _SALT_DEFAULT).absolute()


@functools.cache
def _salt_at(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_random.token_hex(32) + "\n")
        try:  # a link never replaces: whichever process came first wins
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    text = path.read_text().strip()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise RuntimeError(
            f"{path}: not a lorascope salt (64 hex digits); delete it to make "
            "a new one (settings recorded as digests then miss the LLM cache once)"
        )
    return bytes.fromhex(text)


def _plain(value: Any) -> Any:
    """Whole floats as ints: 4 from a file and 4.0 from the command line are
    the same setting (as in `lorascope.workflow.wiring`)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def digest(value: Any) -> str:
    """A salted, stable stand-in for `value` (same value, same salt file:
    same text in every process and run)."""
    blob = json.dumps(_plain(value), sort_keys=True, ensure_ascii=False, default=str)
    mac = hmac.new(_salt_at(salt_path()), blob.encode(), hashlib.sha256)
    return f"<digest:{mac.hexdigest()[:16]}>"


def _is_env_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"env"}


def _clear(value: Any, name: str = "") -> Any:
    """A known-safe setting as it is recorded (credential-looking entries
    inside it still redacted)."""
    if _is_env_ref(value):
        return dict(value)
    if isinstance(value, dict):
        return {k: _clear(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clear(v, name) for v in value]
    if _SECRET_NAME.match(name) and value is not None:
        return REDACTED
    if isinstance(value, str) and _SECRET_VALUE.match(value):
        return REDACTED
    return value


def _hidden(value: Any, name: str) -> Any:
    """A setting not known to be safe: a credential's name -> REDACTED, any
    other -> its digest; env references stay names."""
    if _is_env_ref(value):
        return dict(value)
    if value is None:
        return None
    if _CREDENTIAL.search(name):
        return REDACTED
    return digest(value)


def _entries(params: dict, safe: frozenset, norm) -> dict:
    return {
        k: _clear(v, str(k)) if norm(str(k)) in safe else _hidden(v, str(k))
        for k, v in params.items()
    }


def redact(value: Any) -> Any:
    """`autointerp.request_params` as it may be written or used as a cache key:
    known-safe settings in clear, credentials REDACTED, anything else as a
    salted digest (the module docstring has the rule)."""
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        name = str(key)
        if name in _CONTAINERS and isinstance(item, dict):
            out[key] = _entries(item, *_CONTAINERS[name])
        elif name in SAFE_PARAMS:
            out[key] = _clear(item, name)
        else:
            out[key] = _hidden(item, name)
    return out


def scrub_url(url: str, hide=None) -> str:
    """`url` without userinfo; query values of keys not in SAFE_QUERY hidden
    (`hide(value, name)`, default the request-setting rule: REDACTED or a
    digest). A URL without either comes back unchanged, byte for byte."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() not in SAFE_QUERY for k, _ in pairs):
        hide = hide or _hidden
        query = urlencode(
            [(k, v if k.lower() in SAFE_QUERY else hide(v, k)) for k, v in pairs],
            safe="<>:",
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")


def scrub_text(text: str) -> str:
    """Free text (a log line, an error message) with every URL scrubbed:
    no userinfo, and query values other than SAFE_QUERY's as REDACTED (a log
    needs no digest, and writing one needs no salt file)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: scrub_url(m.group(0), lambda v, k: REDACTED), text)


def scrub_config(config: Any, path: str = "") -> Any:
    """A plain config (or part of one, rooted at `path`) as it may be written:
    `SECRET_SUBTREES` through `redact`, every URL through `scrub_url`."""
    if path in SECRET_SUBTREES:
        return redact(config)
    if isinstance(config, dict):
        return {
            k: scrub_config(v, f"{path}.{k}" if path else str(k))
            for k, v in config.items()
        }
    if isinstance(config, list | tuple):
        return [scrub_config(v, path) for v in config]
    if isinstance(config, str) and "://" in config:
        return scrub_url(config)
    return config
