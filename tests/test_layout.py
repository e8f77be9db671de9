"""The code's layout shows the workflow: one package per rule file, imports
that only point down (stage -> core), modules small enough to read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

PKG = REPO / "src" / "lorascope"
RULES = REPO / "workflow" / "rules"
MAX_LINES = 300


def stage_of(path: Path) -> str:
    """The subpackage a module lives in ('core' for the shared core)."""
    return path.relative_to(PKG).parts[0]


def lorascope_imports(path: Path) -> list[tuple[int, str]]:
    """(line, stage) of every `lorascope.<stage>` import, functions included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: use absolute imports")
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        for name in names:
            parts = name.split(".")
            if parts[0] == "lorascope" and len(parts) > 1:
                out.append((node.lineno, parts[1]))
            elif parts == ["lorascope"] and isinstance(node, ast.ImportFrom):
                out += [(node.lineno, a.name) for a in node.names]
    return out


def stage_modules():
    return [p for p in PKG.rglob("*.py") if p.parent != PKG]


def test_one_package_per_rule_file():
    rule_files = {p.stem for p in RULES.glob("*.smk")} - {"common"}
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    assert packages - {"core"} == rule_files


def test_stage_packages_import_only_core():
    bad = []
    for path in stage_modules():
        own = stage_of(path)
        allowed = {"core"} if own == "core" else {"core", own}
        bad += [
            f"{path.relative_to(REPO)}:{line} imports lorascope.{stage}"
            for line, stage in lorascope_imports(path)
            if stage not in allowed
        ]
    assert not bad, "stages meet only through artifacts or core:\n" + "\n".join(bad)


def test_workflow_scripts_import_their_stage_and_core():
    bad = []
    for rule_file in RULES.glob("*.smk"):
        stage = rule_file.stem
        for script in re.findall(r'"\.\./scripts/(\w+\.py)"', rule_file.read_text()):
            path = REPO / "workflow" / "scripts" / script
            bad += [
                f"{script}:{line} (rule file {rule_file.name}) imports lorascope.{s}"
                for line, s in lorascope_imports(path)
                if s not in ("core", stage)
            ]
    assert not bad, "\n".join(bad)


def test_import_check_sees_violations(tmp_path):
    """The checks above are not vacuous: a sideways import is found."""
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from lorascope.sae.training import x\n")
    assert lorascope_imports(fake) == [(2, "sae")]


def test_every_package_says_what_it_does():
    for init in PKG.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init} has no docstring"
        has_all = any(
            isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__"
            for n in tree.body
        )
        assert has_all, f"{init} has no __all__"


def test_modules_are_small():
    long = {
        str(p.relative_to(REPO)): n
        for p in PKG.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_imported_name_exists():
    """Each `from lorascope.x import name` in the package, the scripts and
    the benches names something x has: a module moved by one change and
    imported under its old home by another fails here, not in a job."""
    import importlib

    files = [*PKG.rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]
    files += list((REPO / "bench").rglob("*.py"))
    missing = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "lorascope"
            ):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{path.name}: {node.module}.{alias.name}")
    assert not missing, missing
