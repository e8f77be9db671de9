"""Content hashes of the files a rule's logic lives in, found by parsing.

Used by `workflow/rules/common.smk` (`code_of`) while the Snakefile is parsed:
`code_version(repo, entry)` follows a rule's script (or the module a shell
rule runs) through every `lorascope` module it imports, adds their package
`__init__`s and the data folders they name (autointerp/templates,
dashboards/assets), and hashes each file. Nothing is imported (no torch at
parse time). Python files are hashed by their syntax tree without
docstrings, so a reformat, a comment or a docstring reruns nothing; paths
are repo-relative and contents are what count, so a moved checkout or a
`touch` changes no hash.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["code_version"]

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, _DOCUMENTED) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _parse(path: Path) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(hash of the code, modules it imports, string constants) of one file."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    imports, strings = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imports.append(node.module)
            imports += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
    dump = ast.dump(_strip_docstrings(tree), include_attributes=False)
    return _digest(dump.encode()), tuple(imports), tuple(strings)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@functools.cache
def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _module_files(src: Path, module: str) -> list[Path]:
    """The files importing `module` executes: its package __init__s and the
    module itself (`from lorascope.x import name` names an attribute when no
    such module exists; then the package is what runs)."""
    parts = module.split(".")
    if parts[0] != "lorascope":
        return []
    found = []
    for i in range(1, len(parts) + 1):
        base = src.joinpath(*parts[:i])
        if (base / "__init__.py").is_file():
            found.append(base / "__init__.py")
        elif base.with_suffix(".py").is_file():
            found.append(base.with_suffix(".py"))
            break  # a module: whatever follows is one of its attributes
        else:
            break
    return found


_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _data_files(module_file: Path, strings: tuple[str, ...]) -> list[Path]:
    """Files of folders beside a module that it names in a string constant
    (autointerp/templates, dashboards/assets)."""
    out = []
    for name in set(strings):
        if not _FOLDER_NAME.match(name):
            continue
        folder = module_file.parent / name
        # A subpackage is code, reached through imports, not data.
        if folder.is_dir() and not (folder / "__init__.py").exists():
            out += [
                p
                for p in sorted(folder.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts
            ]
    return out


def code_version(
    repo: Path | str, entry: str, data: Iterable[str] = ()
) -> dict[str, str]:
    """{repo-relative path: hash} of what a job runs.

    `entry` is a script path relative to the repo (workflow/scripts/x.py) or
    a module run with `python -m` (lorascope.train). `data` adds files or
    folders (relative to the repo) the job reads as its own, e.g. shipped
    weights.
    """
    repo = Path(repo).resolve()
    src = repo / "src"
    if entry.endswith(".py"):
        todo = [repo / entry]
    else:
        todo = _module_files(src, entry)
        main = src.joinpath(*entry.split("."), "__main__.py")
        todo += [main] if main.is_file() else []
        if not todo:
            raise FileNotFoundError(f"no module {entry!r} under {src}")
    seen: dict[Path, str] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        digest, imports, strings = _parse(path)
        seen[path] = digest
        for module in imports:
            todo += _module_files(src, module)
        for extra in _data_files(path, strings):
            seen.setdefault(extra, _file_digest(extra))
    for rel in data:
        target = repo / rel
        files = sorted(p for p in target.rglob("*") if p.is_file())
        for p in files if target.is_dir() else [target]:
            seen[p] = _file_digest(p)
    return {str(p.relative_to(repo)): d for p, d in sorted(seen.items())}
