"""Prompt templates, context formatting and reply parsing for the autointerp
rules (used by the LLM providers of `providers.py`).

Templates are plain text files with `$name` placeholders (`string.Template`,
so JSON braces need no escaping). The defaults live in `templates/` (our own
words). `autointerp.prompts.dir` points every stage at a directory holding
one file per template (`explain.txt`, `categories.txt`, `sae_categories.txt`,
`subcategories.txt`, `assign.txt`, `detect.txt`, `fuzz.txt`, `simulate.txt`;
e.g. a copy of `templates/` reworded, or the paper's App. B wording from your
copy of the paper), and `autointerp.prompts.<name>` replaces one file (it
wins over the directory). Every file must keep its template's placeholders
(`REQUIRED`); a missing file or placeholder is an error naming it.
Activations shown to the explainer are rescaled to 0-10 against the
feature's strongest activation over the contexts shown. One `parse_*` per
template turns a reply into what the step records, or raises `ParseError`
(the engine asks again).
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np

__all__ = [
    "REQUIRED",
    "load_templates",
    "template_paths",
    "render",
    "display_token",
    "format_activation_examples",
    "format_marked",
    "format_highlighted",
    "format_token_lists",
    "ParseError",
    "extract_json",
    "parse_categories",
    "parse_category_id",
    "parse_detect",
    "parse_explanation",
    "parse_numbers",
    "parse_simulation",
    "parse_subcategories",
]

TEMPLATE_DIR = Path(__file__).parent / "templates"
REQUIRED = {
    "explain": {"examples"},
    "categories": {"feature_list", "n_min", "n_max"},
    "sae_categories": {"feature_list", "n_min", "n_max"},
    "subcategories": {"categories", "feature_list"},
    "assign": {"explanation", "examples", "categories"},
    "detect": {"explanation", "contexts", "n"},
    "fuzz": {"explanation", "examples", "n"},
    "simulate": {"explanation", "windows", "n"},
}


def _placeholders(template: string.Template) -> set[str]:
    return {
        m.group("named") or m.group("braced")
        for m in template.pattern.finditer(template.template)
        if m.group("named") or m.group("braced")
    }


def template_paths(prompts: dict | None = None, names=None) -> dict[str, Path]:
    """Path of each template in `names` (default: all) under
    `autointerp.prompts`: a per-template file, else the directory's, else the
    shipped one. Each step reads only its own templates, so its params name
    only those (the config check asks the directory for all of them)."""
    prompts = dict(prompts or {})
    folder = prompts.pop("dir", None)
    unknown = set(prompts) - set(REQUIRED)
    if unknown:
        raise ValueError(f"autointerp.prompts: unknown template(s) {sorted(unknown)}")
    names = list(names or REQUIRED)
    base = Path(folder) if folder else TEMPLATE_DIR
    if folder:
        if not base.is_dir():
            raise FileNotFoundError(f"autointerp.prompts.dir: no directory at {base}")
        missing = [
            f"{n}.txt"
            for n in names
            if not prompts.get(n) and not (base / f"{n}.txt").is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"autointerp.prompts.dir ({base}) lacks {', '.join(missing)}: copy "
                f"them from {TEMPLATE_DIR} (every stage reads its own template)"
            )
    return {n: Path(prompts.get(n) or base / f"{n}.txt") for n in names}


def load_templates(
    prompts: dict | None = None, names=None
) -> dict[str, string.Template]:
    """The templates in `names` (default: all), a user's directory or file
    replacing the shipped one; a missing file or placeholder raises."""
    out = {}
    for name, path in template_paths(prompts, names).items():
        needed = REQUIRED[name]
        if not path.is_file():
            raise FileNotFoundError(f"autointerp.prompts.{name}: no file at {path}")
        template = string.Template(path.read_text())
        missing = needed - _placeholders(template)
        if missing:
            raise ValueError(
                f"autointerp.prompts.{name} ({path}) lacks placeholder(s) "
                + ", ".join(f"${m}" for m in sorted(missing))
            )
        out[name] = template
    return out


def render(template: string.Template, **values) -> str:
    return template.substitute({k: str(v) for k, v in values.items()})


def display_token(token: str) -> str:
    """One-line, visible form of a decoded token (newlines, bare spaces)."""
    shown = token.replace("\n", "\\n").replace("\t", "\\t")
    return shown if shown.strip() else "␣" * max(len(shown), 1)


def _window_text(tokens) -> str:
    return "".join(tokens).replace("\n", "\\n")


def format_activation_examples(
    contexts: list[dict], n_listed: int, scale_max: float | None = None
) -> str:
    """The explainer's view: window text, then its strongest tokens scaled 0-10.

    `contexts` are rows of contexts.parquet for one feature (strongest first).
    Scaling uses the largest activation over all shown windows so strengths
    compare across examples; non-positive activations are never listed.
    """
    if scale_max is None:
        scale_max = max((float(np.max(c["acts"])) for c in contexts), default=0.0)
    scale = 10.0 / scale_max if scale_max > 0 else 0.0
    blocks = []
    for ctx in contexts:
        acts_W = np.asarray(ctx["acts"], dtype=np.float64) * scale
        order = [i for i in np.argsort(-acts_W, kind="stable") if acts_W[i] > 0.005]
        lines = [_window_text(ctx["tokens"])]
        lines += [
            f"{display_token(ctx['tokens'][i])} {acts_W[i]:.2f}"
            for i in order[:n_listed]
        ]
        blocks.append("<example>\n" + "\n".join(lines) + "\n</example>")
    return "\n".join(blocks)


def format_marked(tokens, center: int) -> str:
    """Window text with the token at `center` wrapped in « »."""
    parts = [display_token(t) if i == center else t for i, t in enumerate(tokens)]
    parts[center] = f"«{parts[center]}»"
    return "".join(parts).replace("\n", "\\n")


def format_highlighted(tokens, marked) -> str:
    """Window text with each run of marked token positions wrapped in << >>."""
    marked, parts = set(marked), []
    for i, t in enumerate(tokens):
        opens = i in marked and i - 1 not in marked
        closes = i in marked and i + 1 not in marked
        parts.append(("<<" if opens else "") + t + (">>" if closes else ""))
    return "".join(parts).replace("\n", "\\n")


def format_token_lists(windows) -> str:
    """Each window's text, then its tokens one per line, numbered, each as a
    JSON string (quoted: a digit token never reads as its line number)."""
    blocks = []
    for k, tokens in enumerate(windows):
        lines = [f"Window {k + 1} ({len(tokens)} tokens): {_window_text(tokens)}"]
        lines += [
            f"{i + 1}\t{json.dumps(t, ensure_ascii=False)}"
            for i, t in enumerate(tokens)
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


class ParseError(ValueError):
    """A reply that does not follow the requested format."""


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> dict:
    """The JSON object in a reply, tolerating code fences and chatter around it."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise ParseError(f"no JSON object in reply: {text[:200]!r}")
    try:
        obj = json.loads(body[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ParseError(f"invalid JSON ({exc}): {text[:200]!r}") from None
    if not isinstance(obj, dict):
        raise ParseError(f"reply JSON is not an object: {text[:200]!r}")
    return obj


# -- reply parsers, one per template ---------------------------------------


def parse_explanation(text: str) -> dict:
    """explain.txt: {explanation, classification 0/1/2, reasoning}."""
    obj = extract_json(text)
    expl, cls = obj.get("explanation"), obj.get("classification")
    if not isinstance(expl, str) or not expl.strip():
        raise ParseError(f"no 'explanation' string in {text[:200]!r}")
    if isinstance(cls, str) and cls.strip().isdigit():
        cls = int(cls.strip())
    if isinstance(cls, bool) or not isinstance(cls, int) or cls not in (0, 1, 2):
        raise ParseError(f"'classification' must be 0, 1 or 2, got {cls!r}")
    reason = obj.get("classification_reasoning") or obj.get("reasoning") or ""
    return {"explanation": expl.strip(), "classification": cls, "reasoning": reason}


def parse_numbers(n: int, key: str):
    """A parser of the window numbers 1..n listed under `key`, as n bools."""

    def parse(text: str) -> list[bool]:
        got = extract_json(text).get(key)
        if not isinstance(got, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in got
        ):
            raise ParseError(f"'{key}' must be a list of integers: {text[:200]!r}")
        if any(not 1 <= i <= n for i in got):
            raise ParseError(f"window numbers outside 1..{n}: {got}")
        return [i + 1 in set(got) for i in range(n)]

    return parse


def parse_detect(n: int):
    """detect.txt: a parser of the window numbers 1..n it fires on."""
    return parse_numbers(n, "activating")


def parse_simulation(lengths: list[int]):
    """simulate.txt: one list of numbers in 0..10 per window, each exactly as
    long as its window; anything else is malformed (never read as zeros)."""

    def parse(text: str) -> list[list[float]]:
        got = extract_json(text).get("activations")
        if not isinstance(got, list) or len(got) != len(lengths):
            raise ParseError(
                f"'activations' must hold {len(lengths)} lists: {text[:200]!r}"
            )
        out = []
        for k, (row, n) in enumerate(zip(got, lengths, strict=True)):
            ok = isinstance(row, list) and len(row) == n
            if not ok or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 10
                for v in row
            ):
                raise ParseError(
                    f"window {k + 1}: need {n} numbers in 0..10, got {str(row)[:120]}"
                )
            out.append([float(v) for v in row])
        return out

    return parse


def parse_categories(text: str) -> dict:
    """categories.txt / sae_categories.txt: {categories: [...], summary}."""
    obj = extract_json(text)
    cats = obj.get("categories")
    if not isinstance(cats, list) or not cats:
        raise ParseError("no 'categories' list")
    for c in cats:
        if not isinstance(c, dict) or not re.fullmatch(
            r"[a-z0-9_]+", str(c.get("string_id", ""))
        ):
            raise ParseError(f"category without a snake_case string_id: {c!r}")
    return obj


def parse_subcategories(text: str) -> dict:
    """subcategories.txt: category id -> [subcategory, ...]."""
    subs = extract_json(text).get("subcategories")
    if not isinstance(subs, dict):
        raise ParseError("no 'subcategories' object")
    return subs


def parse_category_id(text: str, ids: list[str]) -> str:
    """assign.txt: the one allowed id in a reply (bare, quoted or inside a
    short sentence)."""
    clean = text.strip().strip("`'\" .").lower()
    if clean in ids:
        return clean
    found = {
        i for i in ids if re.search(rf"(?<![\w/]){re.escape(i)}(?![\w/])", text.lower())
    }
    if len(found) == 1:
        return found.pop()
    raise ParseError(f"reply names {len(found)} of the allowed ids: {text[:200]!r}")
