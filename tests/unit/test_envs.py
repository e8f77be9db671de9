"""Each rule's conda env provides what its code imports, at pyproject's versions.

Jobs launched from the venv inherit its sys.path, so a package missing from a
rule's `envs/*.yaml` goes unnoticed until `--sdm conda` runs on a cluster.
This test follows every rule's entry point (its script, or the module a shell
rule runs with `-m`) through the lorascope modules it imports, statically and
including imports inside functions, collects the third-party packages, and
checks the rule's env file names each one; where an env file and
pyproject.toml both pin a package, the versions must agree.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import REPO

PKG = REPO / "src" / "lorascope"
RULES = REPO / "workflow" / "rules"

# Import name -> distribution name, where they differ.
DIST = {
    "yaml": "pyyaml",
    "sae_lens": "sae-lens",
    "math_verify": "math-verify",
    "PIL": "pillow",
    "vllm": "vllm",
}
# Conda packages that provide a distribution under another name.
CONDA_PROVIDES = {"pytorch-gpu": "torch", "pytorch": "torch"}
# What an env gets through a listed package's own requirements (vllm's
# metadata requires these), so listing them again could only conflict.
PROVIDED_BY = {"vllm": {"torch", "numpy", "safetensors", "transformers", "tokenizers"}}
# vLLM's own pins decide these in its env (vLLM 0.33 caps transformers below
# 5.21 and brings its CUDA torch): they may differ from pyproject.toml.
VERSION_EXCEPTIONS = {("envs/vllm.yaml", "transformers"), ("envs/vllm.yaml", "torch")}
# Packages the entry points import only on a path their env does not take:
# flash-attn is opt-in (model.attn_implementation: flash_attention_2).
OPTIONAL = {"flash_attn"}


@cache
def module_path(name: str) -> Path | None:
    """Source file of a lorascope module (package __init__ or module)."""
    parts = name.split(".")[1:]
    base = PKG.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


@cache
def imports_of(path: Path) -> tuple[frozenset, frozenset]:
    """(lorascope modules, third-party top-level names) imported anywhere."""
    own, third = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "lorascope" or node.module.startswith("lorascope."):
                names += [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == "lorascope":
                if module_path(name):
                    own.add(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return frozenset(own), frozenset(third)


def third_party_needs(entry: Path) -> set[str]:
    """Distributions imported by `entry` and the lorascope modules it reaches."""
    seen, todo, third = set(), [entry], set()
    if entry.name == "figure.py":  # imports lorascope.figures.<plotter> by name
        todo += sorted((PKG / "figures").glob("*.py"))
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        own, names = imports_of(path)
        third |= names
        todo += [module_path(m) for m in own]
    third.discard("snakemake")  # injected into scripts by Snakemake itself
    return {
        DIST.get(n, n).lower().replace("_", "-") for n in third if n not in OPTIONAL
    }


def rules() -> list[tuple[str, str, Path]]:
    """(rule, env file, entry point) for every rule that declares a conda env.

    Rules made by `use rule ... with:` share their parent's env and entry;
    anonymous `rule:` blocks (the figure table's loop) are named by their
    script; a shell command built by a helper in the same file (the
    trainings' `train_command`) is found in the file's text."""
    out = []
    for smk in RULES.glob("*.smk"):
        text = smk.read_text()
        blocks = re.split(r"^\s*rule( \w+)?:", text, flags=re.M)
        for name, body in zip(blocks[1::2], blocks[2::2], strict=True):
            env = re.search(r'conda:\s*\n\s*"\.\./\.\./(envs/[\w.-]+)"', body)
            script = re.search(r'script:\s*\n\s*"\.\./(scripts/[\w.]+\.py)"', body)
            module = re.search(r"-m (lorascope[\w.]*)", body) or re.search(
                r"-m (lorascope[\w.]*)", text
            )
            name = (name or "").strip() or f"{smk.stem} (anonymous)"
            if not env:
                continue
            if script:
                entry = REPO / "workflow" / script.group(1)
            elif module:
                entry = module_path(module.group(1)) or module_path(
                    module.group(1) + ".__main__"
                )
                main = module_path(module.group(1) + ".__main__")
                entry = main or entry
            else:
                raise AssertionError(f"rule {name}: no script or -m entry point")
            out.append((name, env.group(1), entry))
    return out


def env_packages(env_file: str) -> dict[str, str | None]:
    """name -> pinned version (None if unpinned) of a conda env file."""
    spec = yaml.safe_load((REPO / env_file).read_text())
    out = {}
    for dep in spec["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            m = re.match(r"([A-Za-z0-9_.\[\]-]+)\s*(==|=)?\s*([^\s#;]+)?", item)
            name = re.sub(r"\[.*\]", "", m.group(1)).lower().replace("_", "-")
            name = CONDA_PROVIDES.get(name, name)
            out[name] = m.group(3)
    for name in list(out):
        for implied in PROVIDED_BY.get(name, ()):
            out.setdefault(implied, None)
    return out


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for dep in deps["dependencies"]:
        name, _, version = dep.partition("==")
        pins[name.lower().replace("_", "-")] = version
    return pins


RULE_ENVS = rules()


def test_every_rule_has_a_conda_env():
    names = {r for r, _, _ in RULE_ENVS}
    assert {"train_rank1", "eval_grade", "steering_sweep", "dashboards"} <= names


@pytest.mark.parametrize("rule,env,entry", RULE_ENVS, ids=[r[0] for r in RULE_ENVS])
def test_env_provides_every_import(rule, env, entry):
    have = env_packages(env)
    missing = sorted(third_party_needs(entry) - set(have) - {"python"})
    assert not missing, f"rule {rule} imports {missing}, absent from {env}"


@pytest.mark.parametrize("env", sorted({e for _, e, _ in RULE_ENVS}))
def test_env_versions_agree_with_pyproject(env):
    pins = pyproject_pins()
    differ = {
        name: (version, pins[name])
        for name, version in env_packages(env).items()
        if name in pins
        and version is not None
        and version != pins[name]
        and (env, name) not in VERSION_EXCEPTIONS
    }
    assert not differ, f"{env} vs pyproject.toml (env, pyproject): {differ}"


def test_the_check_sees_a_missing_import(tmp_path):
    """Not vacuous: grading needs math-verify, found through the package."""
    script = tmp_path / "s.py"
    script.write_text("from lorascope.core.grading import grade\n")
    assert "math-verify" in third_party_needs(script)
