"""Wiring: what a rule's params record, code hashes, and the rule files' habits.

The rebuild contract as a whole (which jobs an edit reruns) is checked on a
finished run in tests/support/rebuild_matrix.py; these check its parts in milliseconds.
"""

import ast
import os
import pickle
import re

import pytest
import yaml
from conftest import REPO

from lorascope.core.config import load_schema, validate
from lorascope.workflow.codeversion import code_version
from lorascope.workflow.wiring import (
    REDACTED,
    RUNTIME_KEYS,
    UndeclaredKey,
    declared,
    redact,
)

RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))


@pytest.fixture(scope="module")
def schema():
    return load_schema()


def _config(schema, **over):
    with open(REPO / "config" / "config.yaml") as f:
        cfg = yaml.safe_load(f)
    for section, values in over.items():
        cfg.setdefault(section, {}).update(values)
    return validate(cfg, schema)


def test_recorded_params_leave_out_runtime_keys_and_key_order(schema):
    a = declared(_config(schema), ["activations", "seed"], schema)
    b = declared(
        _config(schema, activations={"batch_tokens": 7, "top_k": 64}),
        ["seed", "activations"],
        schema,
    )
    assert a["activations"]["batch_tokens"] != b["activations"]["batch_tokens"]
    assert repr(a) == repr(b)  # what Snakemake compares
    assert "batch_tokens" not in repr(a) and "top_k" in repr(a)
    c = declared(_config(schema, activations={"top_k": 3}), ["activations"], schema)
    assert repr(c) != repr(declared(_config(schema), ["activations"], schema))


def test_a_restated_number_is_recorded_as_the_same_token(schema):
    """4, 4.0 and --config 'sae={k: 4}' are one value: a whole float is
    recorded as the int, so restating a number reruns nothing (item 5)."""
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    def recorded(over=None, **sections):
        with open(REPO / "config" / "config.yaml") as f:
            cfg = yaml.safe_load(f)
        update_config(cfg, over or {})  # as Snakemake merges --config
        for section, values in sections.items():
            cfg[section].update(values)
        return repr(declared(validate(cfg, schema), ["sae", "train"], schema))

    file_form = recorded()
    assert recorded(sae={"k": 4.0}) == file_form
    cli = parse_config(["sae={k: 4}", "train={rank1: {epochs: 1}}"])
    assert recorded(cli) == file_form
    assert recorded(sae={"k": 4.5}) != file_form
    assert recorded(sae={"lr": 0.0003}) != file_form


def test_logging_cadence_is_not_recorded(schema):
    """train.logging_steps changes only train_log.jsonl, read by nothing:
    a new cadence retrains nothing (issue 33, item 6)."""
    keys = ["train.logging_steps", "train.save_steps", "train.rank1"]
    a = declared(_config(schema), keys, schema)
    b = declared(_config(schema, train={"logging_steps": 7}), keys, schema)
    assert b["train"]["logging_steps"] == 7  # the job still gets it
    assert repr(a) == repr(b)


def test_undeclared_key_is_an_error_naming_it(schema):
    params = declared(_config(schema), ["eval.ci", "sae"], schema)
    assert params["sae"]["k"] == 4 and params["eval"]["ci"] == 0.95
    with pytest.raises(UndeclaredKey, match="'eval.limit' is not declared"):
        params["eval"]["limit"]
    with pytest.raises(KeyError, match="nonsense"):
        declared(_config(schema), ["eval.nonsense"], schema)
    # Jobs get it pickled: type, path and strictness survive.
    back = pickle.loads(pickle.dumps(params, protocol=4))
    assert repr(back) == repr(params) and back["sae"].path == "sae"
    with pytest.raises(UndeclaredKey):
        back["eval"]["limit"]


def test_secrets_in_request_params_are_redacted(schema):
    params = {
        "reasoning_effort": "low",
        "api_key": "abc123",
        "extra_headers": {
            "Authorization": "Bearer xyz",
            "X-Org": {"env": "MY_ORG"},
            "X-Trace": "sk-live-123",
        },
        "max_tokens": 5,
    }
    cfg = _config(schema, autointerp={"request_params": params})
    shown = repr(declared(cfg, ["autointerp.request_params"], schema))
    for secret in ("abc123", "Bearer xyz", "sk-live-123"):
        assert secret not in shown
    assert "'low'" in shown and "MY_ORG" in shown and "max_tokens" in shown
    assert redact(params)["extra_headers"]["Authorization"] == REDACTED


def test_runtime_keys_exist_and_are_documented(schema):
    readme = (REPO / "config" / "README.md").read_text()
    for key in RUNTIME_KEYS:
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        assert f"`{key}`" in readme, f"{key} not listed in config/README.md"


def _fake_repo(tmp_path):
    pkg = tmp_path / "src" / "lorascope" / "stage"
    (pkg / "templates").mkdir(parents=True)
    (tmp_path / "src" / "lorascope" / "__init__.py").write_text('"""Top."""\n')
    (pkg / "__init__.py").write_text('"""Stage."""\n')
    (pkg / "a.py").write_text(
        '"""Module a."""\n\nfrom lorascope.stage.b import helper\n\n'
        "def run():\n    return helper() + 1\n"
    )
    (pkg / "b.py").write_text('DIR = "templates"\n\ndef helper():\n    return 1\n')
    (pkg / "c.py").write_text("UNUSED = 1\n")
    (pkg / "templates" / "t.txt").write_text("hello $x\n")
    (tmp_path / "workflow" / "scripts").mkdir(parents=True)
    (tmp_path / "workflow" / "scripts" / "s.py").write_text(
        "from lorascope.stage.a import run\n\nrun()\n"
    )
    return tmp_path


def test_code_version_follows_imports_and_content_only(tmp_path):
    repo = _fake_repo(tmp_path)

    def version():
        from lorascope.workflow.codeversion import clear_cache

        clear_cache()
        return code_version(repo, "workflow/scripts/s.py")

    before = version()
    assert sorted(before) == [
        "src/lorascope/__init__.py",
        "src/lorascope/stage/__init__.py",
        "src/lorascope/stage/a.py",
        "src/lorascope/stage/b.py",
        "src/lorascope/stage/templates/t.txt",
        "workflow/scripts/s.py",
    ]  # c.py is not imported
    b = repo / "src/lorascope/stage/b.py"
    os.utime(b, (1, 1))  # a touch
    b.write_text(b.read_text().replace("def helper", "# why\ndef helper"))
    a = repo / "src/lorascope/stage/a.py"
    a.write_text(a.read_text().replace('"""Module a."""', '"""Module a, reworded."""'))
    assert version() == before, "a touch, a comment or a docstring reran code"
    b.write_text(b.read_text().replace("return 1", "return 2"))
    after = version()
    assert after["src/lorascope/stage/b.py"] != before["src/lorascope/stage/b.py"]
    assert {k for k in after if after[k] != before[k]} == {"src/lorascope/stage/b.py"}
    (repo / "src/lorascope/stage/templates/t.txt").write_text("bye $x\n")
    assert (
        version()["src/lorascope/stage/templates/t.txt"]
        != after["src/lorascope/stage/templates/t.txt"]
    )


def test_code_version_data_argument_follows_content(tmp_path):
    """`data` (shipped weights: resources/toy/base_model) is hashed by
    content: an edit changes the version, a touch does not (issue 33, 1)."""
    from lorascope.workflow.codeversion import clear_cache

    repo = _fake_repo(tmp_path)
    weights = repo / "resources" / "model"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text('{"layers": 2}\n')
    (weights / "w.bin").write_bytes(b"\x00" * 8)

    def version():
        clear_cache()
        return code_version(repo, "workflow/scripts/s.py", ["resources/model"])

    before = version()
    assert {"resources/model/config.json", "resources/model/w.bin"} <= set(before)
    os.utime(weights / "config.json", (1, 1))
    assert version() == before, "a touch of a data file reran code"
    (weights / "config.json").write_text('{"layers": 3}\n')
    after = version()
    assert {k for k in after if after[k] != before.get(k)} == {
        "resources/model/config.json"
    }


def test_code_version_follows_only_the_functions_a_job_reaches(tmp_path):
    """A function-local import counts only when its function is reached from
    the entry; TYPE_CHECKING and a non-entry __main__ block never run
    (issue 33, item 4)."""
    from lorascope.workflow.codeversion import clear_cache

    repo = _fake_repo(tmp_path)
    pkg = repo / "src/lorascope/stage"
    (pkg / "heavy.py").write_text("def train():\n    return 3\n")
    (pkg / "grader.py").write_text("def grade():\n    return 4\n")
    (pkg / "typ.py").write_text("class T:\n    pass\n")
    (pkg / "world.py").write_text(
        "from typing import TYPE_CHECKING\n\n"
        "from lorascope.stage.b import helper\n\n"
        "if TYPE_CHECKING:\n    from lorascope.stage.typ import T\n\n"
        "def build():\n    from lorascope.stage.heavy import train\n"
        "    return train() + _score()\n\n"
        "def _score():\n    from lorascope.stage.grader import grade\n"
        "    return grade()\n\n"
        "def copy():\n    return helper()\n\n"
        "def main():\n    build()\n\n"
        'if __name__ == "__main__":\n    main()\n'
    )
    scripts = repo / "workflow/scripts"
    (scripts / "copy.py").write_text("from lorascope.stage.world import copy\ncopy()\n")
    (scripts / "build.py").write_text("from lorascope.stage import world\n")

    def files(entry):
        clear_cache()
        return {k.rsplit("/", 1)[-1] for k in code_version(repo, entry)}

    copy = files("workflow/scripts/copy.py")
    assert {"world.py", "b.py"} <= copy
    assert not copy & {"heavy.py", "grader.py", "typ.py"}
    assert {"heavy.py", "grader.py"} <= files("workflow/scripts/build.py")
    assert {"heavy.py", "grader.py"} <= files("lorascope.stage.world")  # python -m


def test_a_grader_edit_versions_grading_rules_only():
    """core/grading.py is code of eval_grade, not of the toy rules that copy
    the shipped model or draw the SFT set and benchmarks (issue 33, item 4)."""
    from lorascope.workflow.codeversion import clear_cache

    clear_cache()
    grading = "src/lorascope/core/grading.py"
    pretrain = "src/lorascope/toy/pretrain.py"

    def version(script):
        return code_version(REPO, f"workflow/scripts/{script}")

    assert grading in version("eval_grade.py")
    for script in ("toy_base_model_copy.py", "toy_sft.py", "toy_bench.py"):
        v = version(script)
        assert grading not in v and pretrain not in v, script
        assert "src/lorascope/toy/world.py" in v
    assert "src/lorascope/core/models.py" in version("toy_base_model_copy.py")
    rebuild = version("toy_base_model.py")  # toy.rebuild: true runs it
    assert {grading, pretrain} <= set(rebuild)


def _rule_blocks():
    """(file, rule name, block text) of every rule in workflow/rules (an
    anonymous `rule:` in a loop, the figure table's, is named `<file>:loop`)."""
    for path in RULES:
        text = path.read_text()
        starts = list(re.finditer(r"^( *)rule( \w+)?:", text, re.M))
        for m, nxt in zip(starts, [*starts[1:], None], strict=False):
            name = (m.group(2) or f" {path.stem}:loop").strip()
            yield path.name, name, text[m.start() : nxt.start() if nxt else None]


def _params(block):
    m = re.search(r"^( +)params:\n((?:\1 +.*\n)+)", block, re.M)
    return m.group(2) if m else ""


def test_every_rule_versions_its_own_code():
    names = []
    for file, rule, block in _rule_blocks():
        if rule == "all":
            continue
        names.append(rule)
        script = re.search(r'script:\s+"\.\./scripts/([\w.]+)"', block)
        entry = script.group(1) if script else None
        if entry is None:  # a shell rule (its command may be built by a helper)
            text = (RULES[0].parent / file).read_text()
            entry = re.search(r"-m (lorascope[\w.]*)", block) or re.search(
                r"-m (lorascope[\w.]*)", text
            )
            entry = entry.group(1)
        params = _params(block)
        assert re.search(rf'code=\[?code_of\("{re.escape(entry)}"', params), (
            f"{file}: rule {rule} lacks code=code_of({entry!r}, ...) in its params"
        )
    assert len(names) >= 25


def test_every_prioritised_rule_exists_and_reads_its_priority():
    """A name in resources.PRIORITIES that no rule carries would change
    nothing, silently: each must be a rule whose `priority:` asks for it."""
    from lorascope.workflow.resources import PRIORITIES

    blocks = {rule: block for _, rule, block in _rule_blocks()}
    for rule in PRIORITIES:
        assert rule in blocks, f"PRIORITIES names {rule!r}, which is no rule"
        assert f'priority: rule_priority("{rule}")' in blocks[rule], rule
    for rule, block in blocks.items():  # and no rule asks for another's
        asked = re.findall(r'priority: rule_priority\("(\w+)"\)', block)
        assert asked in ([], [rule]), f"rule {rule} asks for {asked}"


# Placeholders of shell commands that are not one path, and why unquoted.
UNQUOTED = {
    "params.gpus": "a number",
    "params.launcher": "a command of several words; launcher() quotes its paths",
    "params.python": "one or more words (the warm interpreter's client); "
    "generation_python() quotes its paths",
}


def test_shell_commands_quote_every_path():
    """A checkout path with a space must not split a path in a shell rule
    (issue 33, item 11: the interpreter of eval_generate was unquoted)."""
    found = []
    for path in RULES:
        for m in re.finditer(
            r"\{\{?((input|output|log|params)\b[^}:]*)(:\w+)?\}", path.read_text()
        ):
            found.append(m.group(1))
            if m.group(1) not in UNQUOTED:
                assert m.group(3) == ":q", (
                    f"{path.name}: {m.group(0)} in a shell command is not quoted "
                    "(write {...:q})"
                )
    assert {"params.python", "params.launcher", "log"} <= set(found)


def test_rules_read_config_only_through_the_helpers():
    for file, rule, block in _rule_blocks():
        assert "config[" not in _params(block), (
            f"{file}: rule {rule} reads config directly in its params; declare "
            "it with cfg(...)/config_of(...)/setting(...) (common.smk)"
        )


def test_scripts_read_config_only_through_params():
    for path in SCRIPTS:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "config"
            ):
                raise AssertionError(
                    f"{path.name}:{node.lineno} reads snakemake.config[...]: a "
                    "change to that key would not rerun the rule; read it from "
                    "params declared in the rule"
                )


# Input functions that return paths the config names (a local model dir, data,
# benchmark or template files): workflow/rules/common.smk, data.smk,
# train.smk, evaluation.smk and autointerp.smk.
USER_INPUTS = (
    "base_model_input",
    "adapter_source",
    "full_local",
    "sft_data_files",
    "bench_source",
    "engine_inputs",
    "table_model_inputs",
    "autointerp_prompts",
)


def _inputs(block):
    m = re.search(r"^( +)input:\n((?:\1 +.*\n)+)", block, re.M)
    return m.group(2) if m else ""


def test_rules_record_the_content_of_the_user_files_they_read():
    """A rule reading a user's file carries its fingerprint as a param, so a
    file restored with an older mtime (or edited inside an input dir) reruns
    it (issue 33, items 2 and 3)."""
    seen = set()
    for file, rule, block in _rule_blocks():
        used = {f for f in USER_INPUTS if re.search(rf"\b{f}\b", _inputs(block))}
        if not used:
            continue
        seen |= used
        m = re.search(r"user_files=user_files_of\(([^\n]*)\),", _params(block))
        assert m, f"{file}: rule {rule} reads {sorted(used)} without user_files="
        missing = {f for f in used if not re.search(rf"\b{f}\b", m.group(1))}
        assert not missing, f"{file}: rule {rule}: user_files misses {missing}"
    assert seen == set(USER_INPUTS)  # the list names what the rules use


# Tests added from mutation testing (`make mutation SESSIONS=codeversion`).


def test_code_version_disk_cache_serves_unchanged_files_and_survives_damage(
    tmp_path, monkeypatch
):
    """Parse results kept on disk (.snakemake/lorascope/code_hashes.json) serve
    a later parse without parsing; an edited file, an entry of another cache
    format or a broken cache file is parsed again, never trusted."""
    import json

    from lorascope.workflow import codeversion as cv

    repo = _fake_repo(tmp_path / "repo")
    cache = tmp_path / "not" / "yet" / "code_hashes.json"
    entry = "workflow/scripts/s.py"
    parsed = []
    real_parse = cv._parse_source
    monkeypatch.setattr(
        cv, "_parse_source", lambda p: parsed.append(p) or real_parse(p)
    )

    def version():  # as a new Snakefile parse does
        cv.use_disk_cache(cache)
        cv.clear_cache()
        parsed.clear()
        return code_version(repo, entry)

    try:
        first = version()
        stored = json.loads(cache.read_text())
        py = {k for k in first if k.endswith(".py")}
        assert {os.path.relpath(p, repo) for p in stored} == py
        assert len(parsed) == len(py)

        os.utime(cache, (1, 1))
        assert version() == first and parsed == []
        assert cache.stat().st_mtime == 1  # nothing new: not rewritten
        b = repo / "src/lorascope/stage/b.py"
        b.write_text(b.read_text().replace("return 1", "return 22"))
        cv.clear_cache()
        code_version(repo, entry)  # the next rule of the same parse
        os.utime(cache, (1, 1))
        code_version(repo, "lorascope.stage.b")  # saved once, not again
        assert cache.stat().st_mtime == 1

        edited = version()
        assert parsed == []  # parsed and saved by the parse before
        assert {k for k in first if first[k] != edited[k]} == {
            "src/lorascope/stage/b.py"
        }
        assert version() == edited and parsed == []  # saved for the next parse

        stale = json.loads(cache.read_text())
        for hit in stale.values():
            hit[1] = -1  # another cache format
        cache.write_text(json.dumps(stale))
        assert version() == edited and len(parsed) == len(py)

        cache.write_text("{not json")
        assert version() == edited and len(parsed) == len(py)
        assert json.loads(cache.read_text())  # rewritten whole
    finally:
        cv.use_disk_cache(None)
        cv.clear_cache()


def test_code_version_guards_dynamic_names_and_entry_forms(tmp_path):
    """The reach rules of the module docstring, one case each."""
    from lorascope.workflow.codeversion import clear_cache

    repo = _fake_repo(tmp_path)
    pkg, scripts = repo / "src/lorascope/stage", repo / "workflow/scripts"
    for name in ("heavy", "grader", "typ", "cond", "c2"):
        (pkg / f"{name}.py").write_text(f"def {name}():\n    return 1\n")

    def files(entry, data=()):
        clear_cache()
        return {k.rsplit("/", 1)[-1] for k in code_version(repo, entry, data)}

    # `typing.TYPE_CHECKING` never runs; any other top-level `if` does.
    (pkg / "world.py").write_text(
        "import typing\n\nFLAG = 1\n\n"
        "if typing.TYPE_CHECKING:\n    from lorascope.stage.typ import typ\n\n"
        "if FLAG == 1:\n    from lorascope.stage.cond import cond\n"
    )
    (scripts / "w.py").write_text("from lorascope.stage import world\n")
    got = files("workflow/scripts/w.py")
    assert "cond.py" in got and "typ.py" not in got
    # A function using globals() reaches its whole module.
    (pkg / "dyn.py").write_text(
        "def run():\n    return globals()['helper']()\n\n"
        "def helper():\n    from lorascope.stage.heavy import heavy\n"
        "    return heavy()\n"
    )
    (scripts / "d.py").write_text("from lorascope.stage.dyn import run\n\nrun()\n")
    assert "heavy.py" in files("workflow/scripts/d.py")
    # Every import statement of a scope counts.
    (scripts / "two.py").write_text(
        "import lorascope.stage.c2\nimport lorascope.stage.grader\n"
    )
    assert {"c2.py", "grader.py"} <= files("workflow/scripts/two.py")
    # The entry script runs in full: uncalled functions and its main block.
    (scripts / "full.py").write_text(
        "def spare():\n    from lorascope.stage.heavy import heavy\n\n"
        "if __name__ == '__main__':\n    from lorascope.stage.grader import grader\n"
    )
    assert {"heavy.py", "grader.py"} <= files("workflow/scripts/full.py")
    # `python -m` a module: the same; a package: its __main__.py.
    (pkg / "mod.py").write_text((scripts / "full.py").read_text())
    assert {"heavy.py", "grader.py"} <= files("lorascope.stage.mod")
    (pkg / "__main__.py").write_text("from lorascope.stage.c2 import c2\n")
    assert {"__main__.py", "c2.py"} <= files("lorascope.stage")
    # A single data file, not only a folder.
    (repo / "shipped.bin").write_bytes(b"w")
    assert "shipped.bin" in files("workflow/scripts/w.py", ["shipped.bin"])


def test_code_version_failures_name_the_module_or_file(tmp_path):
    from lorascope.workflow.codeversion import clear_cache

    repo = _fake_repo(tmp_path)
    for entry in ("lorascope.stage.nope", "lorascope.stage.b.helper", "other.mod"):
        clear_cache()
        with pytest.raises(FileNotFoundError) as err:
            code_version(repo, entry)
        assert str(err.value) == f"no module {entry!r} under {repo / 'src'}"
    broken = repo / "src/lorascope/stage/b.py"
    broken.write_text("def helper(:\n")
    clear_cache()
    with pytest.raises(SyntaxError) as err:
        code_version(repo, "workflow/scripts/s.py")
    assert err.value.filename == str(broken)
