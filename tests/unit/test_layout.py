"""The code's layout shows the workflow: one package per rule file, imports
that only point down the stage order, modules small enough to read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

PKG = REPO / "src" / "lorascope"
RULES = REPO / "workflow" / "rules"
# Modules are split along seams; this ceiling only catches a file that grew
# past what one reads top to bottom.
MAX_LINES = 400
# The order stages run in: a stage imports `core` and earlier stages, never
# later ones (what a later stage makes reaches an earlier one only as an
# artifact). `workflow` is the Snakefile's machinery (code versions, declared
# config, parse-time checks): it may import every stage, and none imports it.
STAGES = [
    "core",
    "toy",
    "hub",
    "data",
    "train",
    "adapters",
    "evaluation",
    "activations",
    "sae",
    "autointerp",
    "ablation",
    "steering",
    "causal",
    "diffing",
    "attribution",
    "groundtruth",
    "sweeps",
    "figures",
    "dashboards",
    "workflow",
]


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
    assert packages - {"core", "workflow"} == rule_files
    assert packages == set(STAGES), "every package has its place in STAGES"


def test_stages_import_only_earlier_stages():
    bad = []
    for path in stage_modules():
        own = STAGES.index(stage_of(path))
        bad += [
            f"{path.relative_to(REPO)}:{line} imports lorascope.{stage}"
            for line, stage in lorascope_imports(path)
            if stage not in STAGES or STAGES.index(stage) > own
        ]
    assert not bad, "a stage imports core and earlier stages only:\n" + "\n".join(bad)


def test_workflow_scripts_import_their_stage_and_earlier():
    bad = []
    for rule_file in RULES.glob("*.smk"):
        stage = STAGES.index(rule_file.stem) if rule_file.stem in STAGES else None
        for script in re.findall(r'"\.\./scripts/(\w+\.py)"', rule_file.read_text()):
            path = REPO / "workflow" / "scripts" / script
            bad += [
                f"{script}:{line} (rule file {rule_file.name}) imports lorascope.{s}"
                for line, s in lorascope_imports(path)
                if stage is None or STAGES.index(s) > stage
            ]
    assert not bad, "\n".join(bad)


# What Snakemake puts in a rule file's namespace (and Python's builtins).
SNAKEMAKE_GLOBALS = {"config", "workflow", "expand", "report", "directory", "rules"}


def common_smk_undefined(text: str) -> set[str]:
    """Names common.smk's code reads that it neither defines nor imports: with
    the `wildcard_constraints:` block (its only Snakemake syntax) removed, the
    file is Python, and symtable says which names each scope reads globally."""
    import builtins
    import symtable

    text = re.sub(r"\nwildcard_constraints:\n(    .*\n)+", "\n", text)
    table = symtable.symtable(text, "common.smk", "exec")
    defined = {s.get_name() for s in table.get_symbols() if s.is_assigned()}
    defined |= {s.get_name() for s in table.get_symbols() if s.is_imported()}
    known = defined | SNAKEMAKE_GLOBALS | set(dir(builtins))
    used = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    stack = list(table.get_children())
    while stack:
        scope = stack.pop()
        stack += scope.get_children()
        used |= {s.get_name() for s in scope.get_symbols() if s.is_global()}
    return used - known


def test_common_smk_is_a_leaf():
    """common.smk reads nothing a later include defines (each stage's input
    functions and key lists sit at the top of its own rule file), and stays
    short enough to read."""
    text = (RULES / "common.smk").read_text()
    assert common_smk_undefined(text) == set()
    assert len(text.splitlines()) <= 250
    # Not vacuous: a function reading a stage file's global is found.
    assert common_smk_undefined(text + "\ndef f():\n    return ENGINES\n") == {
        "ENGINES"
    }


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
