"""Content hashes of the files a rule's logic lives in, found by parsing.

Used by `workflow/rules/common.smk` (`code_of`) while the Snakefile is parsed:
`code_version(repo, entry)` hashes the files of the code a job runs, found
by following imports from the rule's script (or the module a shell rule
runs), adds their package `__init__`s and the data folders they name
(autointerp/templates, dashboards/assets). Nothing is imported (no torch at
parse time). Python files are hashed by their syntax tree without
docstrings, so a reformat, a comment or a docstring reruns nothing; paths
are repo-relative and contents are what count, so a moved checkout or a
`touch` changes no hash.

Which imports count (a file, once reached, is hashed whole):
- the entry file runs in full, its `if __name__ == "__main__":` block too;
- a module's top-level code runs when it is imported: its imports count,
  and so do the top-level functions it names (decorators, defaults, tables
  of functions); classes count in full; `if TYPE_CHECKING:` blocks and, in
  a module that is not the entry, the `__main__` block never run;
- an import inside a function counts only when that function is reached:
  imported by name (`from m import f`) or named by reached code in its own
  module; `import m` (or importing a submodule by name) reaches all of m.
So a function-local import serving one path (the toy rebuild's pretraining
and grading) does not version the jobs that never call it, and a job whose
path depends on the config has one entry per path (a rule per branch). A
reached function that uses `globals`/`eval`/`exec`/`vars`/`__import__`
reaches its whole module.
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
from typing import NamedTuple

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
    for f in (_parse, _file_digest, _module_files, _data_files, _targets):
        f.cache_clear()


_FORMAT = 2  # of the disk cache's parse results
_DYNAMIC = frozenset({"globals", "eval", "exec", "vars", "__import__"})
_Scope = tuple[tuple[str, ...], tuple[str, ...]]  # (imports, names used)


class _Parsed(NamedTuple):
    """One Python file: imports are "m" (all of module m) or "m:x" (name x
    of m); names are the identifiers a scope uses ("*": all of the file)."""

    digest: str
    top: _Scope  # top-level code (runs on import)
    main: _Scope  # the `if __name__ == "__main__":` block
    defs: dict[str, _Scope]  # top-level functions
    folders: tuple[str, ...]  # short strings that could name a data folder


@functools.cache
def _parse(path: Path) -> _Parsed:
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    hit = _DISK["entries"].get(str(path))
    if hit and hit[0] == stamp and len(hit) == 3 and hit[1] == _FORMAT:
        d = hit[2]
        return _Parsed(
            d["digest"], _scope_of(d["top"]), _scope_of(d["main"]),
            {k: _scope_of(v) for k, v in d["defs"].items()}, tuple(d["folders"]),
        )  # fmt: skip
    result = _parse_source(path)
    _DISK["entries"][str(path)] = [stamp, _FORMAT, result._asdict()]
    _DISK["dirty"] = True
    return result


def _scope_of(pair) -> _Scope:
    return tuple(pair[0]), tuple(pair[1])


def _scan(nodes: list) -> _Scope:
    """Imports and names used anywhere under `nodes`."""
    imports, names = [], set()
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Import):
                imports += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imports += [f"{node.module}:{a.name}" for a in node.names]
            elif isinstance(node, ast.Name):
                names.add("*" if node.id in _DYNAMIC else node.id)
    return tuple(imports), tuple(sorted(names))


def _is_type_checking(node: ast.stmt) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == ...:` without an else."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        and not node.orelse
    )


def _parse_source(path: Path) -> _Parsed:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    folders = set()
    for node in ast.walk(tree):  # children are queued after the parent is seen
        if isinstance(node, _DOCUMENTED) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    node.body = node.body[1:] or [ast.Pass()]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _FOLDER_NAME.match(node.value):
                folders.add(node.value)
    top, main, defs = [], [], {}
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            defs[stmt.name] = _scan(stmt.body)
            a = stmt.args
            top += [*stmt.decorator_list, *a.defaults, *filter(None, a.kw_defaults)]
        elif _is_type_checking(stmt):
            top += stmt.orelse
        elif _is_main_guard(stmt):
            main.append(stmt)
        else:
            top.append(stmt)  # classes included: their bodies run on import
    dump = ast.dump(tree)  # without line numbers (include_attributes=False)
    return _Parsed(
        _digest(dump.encode()), _scan(top), _scan(main), defs, tuple(sorted(folders))
    )


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
def _data_files(path: Path) -> tuple[Path, ...]:
    """Files of the folders beside a module that its strings name
    (autointerp/templates, dashboards/assets); a subpackage is code, reached
    through imports, not data."""
    data = []
    for name in _parse(path).folders:
        folder = path.parent / name
        if folder.is_dir() and not (folder / "__init__.py").exists():
            data += [
                p
                for p in sorted(folder.rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts
            ]
    return tuple(data)


@functools.cache
def _targets(src: Path, imported: str) -> tuple[tuple[Path, str | None], ...]:
    """(file, unit) pairs an import reaches: unit None is a module's top-level
    code, "*" all of it, a name one top-level function (or class) of it."""
    module, _, name = imported.partition(":")
    files = _module_files(src, module)
    if name:
        deeper = _module_files(src, f"{module}.{name}")
        if len(deeper) > len(files):  # `from package import submodule`
            files, name = deeper, ""
    if not files:
        return ()
    return (*[(f, None) for f in files[:-1]], (files[-1], name or "*"))


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
        todo: list[tuple[Path, str | None]] = [(repo / entry, "*")]
        todo.append((repo / entry, "__main__"))
    else:
        files = _module_files(src, entry)
        target = src.joinpath(*entry.split("."))
        main = target / "__main__.py"
        # The entry itself, not only a package above it (a mistyped name).
        if not files or files[-1] not in (
            target.with_suffix(".py"),
            target / "__init__.py",
        ):
            raise FileNotFoundError(f"no module {entry!r} under {src}")
        runs = main if main.is_file() else files[-1]  # what `python -m` runs
        todo = [(f, None) for f in files] + [(runs, "*"), (runs, "__main__")]
    seen: dict[Path, str] = {}
    done: set[tuple[Path, str | None]] = set()
    while todo:
        path, unit = todo.pop()
        if (path, unit) in done:
            continue
        done.add((path, unit))
        parsed = _parse(path)
        if path not in seen:
            seen[path] = parsed.digest
            for extra in _data_files(path):
                seen.setdefault(extra, _file_digest(extra))
            todo.append((path, None))
        if unit is None:
            scopes = [parsed.top]
        elif unit == "*":
            scopes = [parsed.top, *parsed.defs.values()]
        elif unit == "__main__":
            scopes = [parsed.main]
        else:  # one function, or a name that is not one (a constant, a class)
            scopes = [parsed.defs[unit]] if unit in parsed.defs else []
        for imports, names in scopes:
            for name in names:
                if name == "*":
                    todo.append((path, "*"))
                elif name in parsed.defs:
                    todo.append((path, name))
            for imported in imports:
                todo += _targets(src, imported)
    save_disk_cache()
    for rel in data:
        target = repo / rel
        files = sorted(p for p in target.rglob("*") if p.is_file())
        for p in files if target.is_dir() else [target]:
            seen[p] = _file_digest(p)
    return {str(p.relative_to(repo)): d for p, d in sorted(seen.items())}
