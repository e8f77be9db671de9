"""What a rule depends on, stated so that Snakemake reruns exactly what changed.

Used by `workflow/rules/common.smk` while the Snakefile is parsed (nothing
here imports torch) and, through the params it builds, by every job:

- `declared(config, paths, schema)`: the config keys a rule reads, as a
  `JobConfig`. Its `repr` is what Snakemake stores in `.snakemake/metadata`
  and compares to decide a rerun: sorted, without `RUNTIME_KEYS`, request
  settings recorded by `lorascope.core.secrets.redact` (only known-safe ones
  in clear), URLs without their userinfo. Reading a key the rule did not declare raises
  `UndeclaredKey`, so a job cannot silently depend on config its params do
  not carry.
- `redact(value)`: free-form request parameters as they may be recorded.

The code a rule runs is versioned by `lorascope.workflow.codeversion`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from lorascope.core.secrets import REDACTED, SECRET_SUBTREES, redact, scrub_url

__all__ = [
    "JobConfig",
    "REDACTED",
    "RUNTIME_KEYS",
    "RecordedURL",
    "UndeclaredKey",
    "declared",
    "recorded",
    "redact",
]

# Keys that never change a result: memory per batch, requests in flight,
# retries and timeouts, checkpoint and loss-logging cadence (logging_steps
# changes only train_log.jsonl, which nothing reads; the resolved config
# beside it records the cadence it was written with), where the paid-reply
# cache lives, whether vLLM's two engines share a job (eval.vllm.one_job: the
# same completions either way),
# spend caps (a run that hits one fails, it never writes a different result).
# A rule may read them, but they are never recorded, so changing one reruns
# nothing (config/README.md lists them).
RUNTIME_KEYS = frozenset(
    {
        "activations.batch_tokens",
        "ablation.variants_per_forward",
        "ablation.logit_chunk",
        "autointerp.concurrency",
        "autointerp.retries",
        "autointerp.timeout_s",
        "autointerp.backoff_base_s",
        "autointerp.backoff_max_s",
        "autointerp.budget",
        "autointerp.cache",
        "train.save_steps",
        "train.logging_steps",
        "train.fsdp_config",
        "eval.vllm.kv_cache_gib",
        "eval.vllm.one_job",
        "eval.vllm.python",
    }
)


class RecordedURL(str):
    """A URL handed to a job as one param (`setting("hub.endpoint")`): the job
    gets it whole, Snakemake records (repr) it without userinfo."""

    def __repr__(self) -> str:
        return repr(scrub_url(str(self)))

    def __reduce__(self):  # a script job gets a plain str
        return (str, (str(self),))


def recorded(value: Any) -> Any:
    """`value` as a rule param: a URL as a RecordedURL, anything else as is."""
    if isinstance(value, str) and "://" in value:
        return RecordedURL(value)
    return value


class UndeclaredKey(KeyError):
    """A job read a config key its rule's params do not declare."""

    def __str__(self) -> str:
        return (
            f"config key {self.args[0]!r} is not declared by this rule: add it to "
            "the rule's cfg(...) params (workflow/rules/common.smk; "
            "docs/ARCHITECTURE.md, 'Wiring conventions')"
        )


def _canonical(value: Any) -> Any:
    """Plain containers with sorted keys, whole floats as ints: the recorded
    form must not depend on the order keys were written in a YAML file, nor
    on whether 4 came as `4`, `4.0` or `--config 'sae={k: 4}'`. A URL is
    recorded without its userinfo (a password in `base_url`)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and "://" in value:
        return scrub_url(value)
    if isinstance(value, JobConfig):
        return value.recorded()
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


class JobConfig(dict):
    """The config keys one rule declares, handed to its job as a param.

    A plain dict for the job (runtime keys included). Its repr, which
    Snakemake records and compares, leaves out RUNTIME_KEYS and records
    request settings through `redact` and URLs without userinfo; a missing
    key raises UndeclaredKey (every schema key exists after validation, so a
    missing one was not declared).
    """

    def __init__(self, data=(), path: str = ""):
        super().__init__(data)
        self.path = path

    def _full(self, key) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def __missing__(self, key):
        raise UndeclaredKey(self._full(key))

    def recorded(self) -> dict:
        """What a rerun decision sees (and what `.snakemake/metadata` holds)."""
        out = {}
        for key in sorted(self, key=str):
            full = self._full(key)
            if full in RUNTIME_KEYS:
                continue
            value = self[key]
            if full in SECRET_SUBTREES:
                value = redact(value)
            out[key] = _canonical(value)
        return out

    def __repr__(self) -> str:
        return repr(self.recorded())

    __str__ = __repr__

    @property
    def as_json(self) -> str:
        """Everything declared, runtime keys included (for a shell command)."""
        return json.dumps(self, sort_keys=True)

    def __reduce__(self):
        # Pickled into every script job; keep the path, rebuild from items.
        return (JobConfig, (dict(self), self.path))


def _wrap(value: Any, schema: dict | None, path: str) -> Any:
    """A deep copy of `value`; schema objects with fixed keys become JobConfigs."""
    if isinstance(value, dict) and schema and "properties" in schema:
        props = schema["properties"]
        return JobConfig(
            {k: _wrap(v, props.get(k), f"{path}.{k}" if path else k)
             for k, v in value.items()},
            path,
        )  # fmt: skip
    return copy.deepcopy(value)


def declared(config: dict, paths: Iterable[str], schema: dict) -> JobConfig:
    """The parts of a validated `config` named by dotted `paths`, as one
    JobConfig rooted at the top level ("sae" = the whole section,
    "eval.ci" = one key)."""
    root = JobConfig()
    for dotted in paths:
        parts = dotted.split(".")
        node, src, sch, where = root, config, schema, ""
        for i, part in enumerate(parts):
            if not isinstance(src, dict) or part not in src:
                raise KeyError(f"{dotted!r} is not a config key")
            where = f"{where}.{part}" if where else part
            sub = (sch or {}).get("properties", {}).get(part)
            if i == len(parts) - 1:
                node[part] = _wrap(src[part], sub, where)
            else:
                if part not in node:
                    node[part] = JobConfig(path=where)
                node, src, sch = node[part], src[part], sub
    return root
