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
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["clear_cache", "code_version", "use_disk_cache"]

# Parsing every module costs ~0.7 s per Snakefile parse; results are kept on
# disk by (size, mtime, ctime), so later parses only re-read changed files.
_DISK: dict = {"path": None, "entries": {}, "dirty": False}

_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def use_disk_cache(path: Path | str | None) -> None:
    """Keep parse results in `path` (a JSON file) across processes."""
    _DISK.update(path=Path(path) if path else None, entries={}, dirty=False)
    if path and Path(path).is_file():
        try:
            _DISK["entries"] = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            pass  # a broken cache is only slower


def save_disk_cache() -> None:
    if not (_DISK["path"] and _DISK["dirty"]):
        return
    path = _DISK["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(_DISK["entries"]))
    os.replace(tmp, path)  # concurrent parses: the last complete one wins
    _DISK["dirty"] = False


def clear_cache() -> None:
    for f in (_parse, _file_digest, _module_files, _node):
        f.cache_clear()


@functools.cache
def _parse(path: Path) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(hash of the code without docstrings, modules it imports, short
    strings that could name a data folder) of one Python file."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    hit = _DISK["entries"].get(str(path))
    if hit and hit[0] == stamp:
        return hit[1], tuple(hit[2]), tuple(hit[3])
    result = _parse_source(path)
    _DISK["entries"][str(path)] = [stamp, *result]
    _DISK["dirty"] = True
    return result


def _parse_source(path: Path) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    imports, names = [], set()
    for node in ast.walk(tree):  # children are queued after the parent is seen
        if isinstance(node, _DOCUMENTED) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    node.body = node.body[1:] or [ast.Pass()]
        elif isinstance(node, ast.Import):
            imports += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imports.append(node.module)
            imports += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _FOLDER_NAME.match(node.value):
                names.add(node.value)
    dump = ast.dump(tree, include_attributes=False)
    return _digest(dump.encode()), tuple(imports), tuple(sorted(names))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@functools.cache
def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@functools.cache
def _module_files(src: Path, module: str) -> tuple[Path, ...]:
    """The files importing `module` executes: its package __init__s and the
    module itself (`from lorascope.x import name` names an attribute when no
    such module exists; then the package is what runs)."""
    parts = module.split(".")
    if parts[0] != "lorascope":
        return ()
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
    return tuple(found)


@functools.cache
def _node(path: Path, src: Path) -> tuple[str, tuple[Path, ...], tuple[Path, ...]]:
    """(hash, lorascope files it imports, data files it names) of one file.

    Data files: those of a folder beside the module named in a string
    constant (autointerp/templates, dashboards/assets); a subpackage is code,
    reached through imports, not data."""
    digest, imports, names = _parse(path)
    modules = tuple(f for m in imports for f in _module_files(src, m))
    data = []
    for name in names:
        folder = path.parent / name
        if folder.is_dir() and not (folder / "__init__.py").exists():
            data += [
                p
                for p in sorted(folder.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts
            ]
    return digest, modules, tuple(data)


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
        todo = list(_module_files(src, entry))
        main = src.joinpath(*entry.split("."), "__main__.py")
        todo += [main] if main.is_file() else []
        if not todo:
            raise FileNotFoundError(f"no module {entry!r} under {src}")
    seen: dict[Path, str] = {}
    todo = list(todo)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        digest, modules, folders = _node(path, src)
        seen[path] = digest
        todo += modules
        for extra in folders:
            seen.setdefault(extra, _file_digest(extra))
    save_disk_cache()
    for rel in data:
        target = repo / rel
        files = sorted(p for p in target.rglob("*") if p.is_file())
        for p in files if target.is_dir() else [target]:
            seen[p] = _file_digest(p)
    return {str(p.relative_to(repo)): d for p, d in sorted(seen.items())}
