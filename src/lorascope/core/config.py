"""Config validation against workflow/schemas/config.schema.yaml.

Used by `workflow/rules/common.smk` before any job is scheduled, so a bad key
fails the whole run up front with a message naming the key path. Defaults
come from the schema (one visible place), then config/config.yaml, then the
user's `--configfile` / `--config` overrides (Snakemake merges those).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import platform
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lorascope.core.checks import (
    ConfigHint,
    attention_hint,
    coerce_numbers,
    semantic_problems,
)
from lorascope.core.secrets import scrub_config

SCHEMA_PATH = (
    Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
)

# Packages whose versions are written beside every trained artifact.
PROVENANCE_PACKAGES = (
    "lorascope torch transformers tokenizers trl peft accelerate datasets "
    "sae-lens polars numpy safetensors math-verify snakemake"
).split()


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the key path."""


def load_schema(path: Path | str = SCHEMA_PATH) -> dict:
    # libyaml's parser when present: the pure-Python one takes ~1 s on every
    # Snakefile parse.
    with open(path) as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _fill_defaults(schema: dict, node: Any) -> None:
    """Insert schema defaults for missing keys, recursing into objects.

    An object section with no value gets `{}` so that its own keys' defaults
    are filled too; every section therefore appears in the resolved config.
    """
    if not isinstance(node, dict) or schema.get("type") != "object":
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in node:
            if "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object":
                node[key] = {}
        if key in node:
            _fill_defaults(sub, node[key])


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        # jsonschema reports the parent; name the offending key itself.
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        parts.append(",".join(extra))
        return ".".join(parts) + ": unknown key (not in the config schema)"
    if error.validator == "required":
        return ".".join(parts) or "<root>"
    return ".".join(parts) or "<root>"


def validate(config: dict, schema: dict | None = None, benchmarks=None) -> dict:
    """Fill defaults into `config` (in place) and validate it.

    Numbers written as strings ('1e-3', as PyYAML reads it) become numbers
    first. `benchmarks`: a function returning the hub benchmark names the
    evaluation stage knows (None skips that check). Returns the same dict.
    Raises ConfigError listing every problem, each starting with its dotted
    key path; warns (ConfigHint) of what only a job's environment can tell.
    """
    schema = schema or load_schema()
    _fill_defaults(schema, config)
    coerce_numbers(schema, config)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            where = _key_path(e)
            if e.validator == "additionalProperties":
                lines.append(where)
            else:
                lines.append(f"{where}: {e.message}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    problems = semantic_problems(config, benchmarks)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    hint = attention_hint(config["model"]["attn_implementation"])
    if hint:
        warnings.warn(hint, ConfigHint, stacklevel=2)
    return config


def schema_defaults(name: str, values: dict | None = None) -> dict:
    """Config section `name` as a rule gets it: `values` (a partial section,
    or nothing) with the schema's defaults filled in, validated. For code and
    tests that build settings without a config file; settings classes have
    no defaults or bounds of their own."""
    return validate({name: copy.deepcopy(dict(values or {}))})[name]


def section(config: dict, name: str) -> dict:
    """A plain-dict copy of one config section (what a rule passes as params)."""
    return copy.deepcopy(dict(config[name]))


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_provenance(directory: Path | str, config: dict) -> None:
    """Write the resolved config and package versions beside an artifact."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Only known-safe request settings in clear, URLs without userinfo.
    plain = scrub_config(json.loads(json.dumps(config)))
    with open(directory / "resolved_config.yaml", "w") as f:
        yaml.safe_dump(plain, f, sort_keys=False)
    with open(directory / "versions.json", "w") as f:
        json.dump(package_versions(), f, indent=2)
