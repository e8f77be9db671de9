"""Config validation against workflow/schemas/config.schema.yaml.

Used by `workflow/rules/common.smk` before any job is scheduled, so a bad key
fails the whole run up front with a message naming the key path. Defaults
come from the schema (one visible place), then config/config.yaml, then the
user's `--configfile` / `--config` overrides (Snakemake merges those).
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import platform
from pathlib import Path
from typing import Any

import jsonschema
import yaml

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
    with open(path) as f:
        return yaml.safe_load(f)


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


def validate(config: dict, schema: dict | None = None) -> dict:
    """Fill defaults into `config` (in place) and validate it.

    Returns the same dict. Raises ConfigError listing every problem, each
    starting with its dotted key path.
    """
    schema = schema or load_schema()
    _fill_defaults(schema, config)
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
    _check_semantics(config)
    return config


def _check_semantics(config: dict) -> None:
    """Checks that a JSON schema cannot express."""
    model = config["model"]
    base = model["base"]
    if base != "toy" and base.startswith((".", "/")) and not Path(base).exists():
        raise ConfigError(f"model.base: local path {base!r} does not exist")
    _check_attention(model["attn_implementation"])


def _check_attention(kernel: str) -> None:
    """flash_attention_2 is opt-in: without the package, model loading would
    fail inside the first GPU job; fail here instead, before any job."""
    if kernel == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError(
            "model.attn_implementation: flash_attention_2 needs the flash-attn "
            "package, which is not installed in this environment. Use sdpa (the "
            "default), or install flash-attn (config/README.md, 'Attention "
            "kernels': pip install flash-attn --no-build-isolation, after torch)"
        )


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
    with open(directory / "resolved_config.yaml", "w") as f:
        yaml.safe_dump(json.loads(json.dumps(config)), f, sort_keys=False)
    with open(directory / "versions.json", "w") as f:
        json.dump(package_versions(), f, indent=2)
