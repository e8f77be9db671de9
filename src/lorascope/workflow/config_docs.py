"""config/README.md's key tables, generated from the config schema.

The schema (`workflow/schemas/config.schema.yaml`) is the one place where a
key's default, bounds and meaning are written; the README's tables are
rendered from it between markers, one table per section:

    <!-- keys:hub -->
    ...generated...
    <!-- /keys -->

`keys:top` is the top-level scalar keys; `keys:figures` a section (nested
objects, nullable objects and maps of named entries get dotted rows). The prose
around the markers is hand-written and left alone. `make config-docs` runs
`python -m lorascope.workflow.config_docs` (rewrite the README);
`--check` exits 1 when a table is stale (a unit test does the same).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from lorascope.core.config import SCHEMA_PATH, load_schema

README = SCHEMA_PATH.parents[2] / "config" / "README.md"
BLOCK = re.compile(r"(<!-- keys:([a-z_]+) -->\n)(.*?)(<!-- /keys -->)", re.DOTALL)

__all__ = ["render", "section_table"]


def _value(v) -> str:
    return "`" + json.dumps(v, separators=(", ", ": ")).replace('"', "") + "`"


def _allowed(sub: dict) -> str:
    """Type, choices and bounds of one key, as the schema states them."""
    if "oneOf" in sub:
        return "; or ".join(_allowed(alt) for alt in sub["oneOf"])
    if "enum" in sub:
        return "one of " + ", ".join(_value(v) for v in sub["enum"])
    kind = sub.get("type", "")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if "enum" in sub.get("items", {}):
        kind += " of " + ", ".join(_value(v) for v in sub["items"]["enum"])
    if "pattern" in sub:
        kind += f" matching `{sub['pattern']}`"
    if "pattern" in sub.get("propertyNames", {}):
        kind += f" with names matching `{sub['propertyNames']['pattern']}`"
    if isinstance(sub.get("additionalProperties"), dict):
        values = sub["additionalProperties"]
        kind += " of " + ("objects" if "properties" in values else _allowed(values))
    bounds = [
        f"{op} {sub[name]}"
        for name, op in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if name in sub
    ]
    return ", ".join([kind, *bounds]) if kind else ", ".join(bounds)


def _rows(schema: dict, prefix: str = ""):
    """(key, subschema) per row. A section object gives its keys' rows; an
    object that is also a value (nullable, or a map of named entries) gives
    its own row, then its keys' (`name.{name}.key` for a map's entries).
    Sibling objects sharing one schema collapse into `{a,b}.key` rows."""
    props = schema.get("properties", {})
    keys = list(props)
    done: set[str] = set()
    for key in keys:
        if key in done:
            continue
        sub = props[key]
        extra = sub.get("additionalProperties")
        if sub.get("type") == "object" and "properties" in sub:
            same = [k for k in keys if k not in done and props[k] == sub]
            done.update(same)
            name = key if len(same) == 1 else "{" + ",".join(same) + "}"
            yield from _rows(sub, f"{prefix}{name}.")
            continue
        yield f"{prefix}{key}", sub
        if "properties" in sub:
            yield from _rows(sub, f"{prefix}{key}.")
        elif isinstance(extra, dict) and "properties" in extra:
            yield from _rows(extra, f"{prefix}{key}.{{name}}.")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def section_table(name: str, schema: dict | None = None) -> str:
    """The markdown table of one section (`top`: the top-level scalars)."""
    schema = schema or load_schema()
    if name == "top":
        node = {
            "properties": {
                k: v
                for k, v in schema["properties"].items()
                if v.get("type") != "object"
            }
        }
    else:
        node = schema["properties"][name]
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, sub in _rows(node):
        default = _value(sub["default"]) if "default" in sub else "—"
        cells = [f"`{key}`", default, _allowed(sub), sub.get("description", "")]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render(text: str, schema: dict | None = None) -> str:
    """`text` with every marked table regenerated from the schema."""
    schema = schema or load_schema()

    def table(m: re.Match) -> str:
        return m.group(1) + section_table(m.group(2), schema) + m.group(4)

    return BLOCK.sub(table, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if stale")
    ap.add_argument("--readme", type=Path, default=README)
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{args.readme}: key tables are stale; run make config-docs")
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
