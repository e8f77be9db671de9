"""config/README.md's key tables are generated from the schema (make config-docs)."""

from conftest import REPO

from lorascope.core.config import load_schema
from lorascope.workflow.config_docs import BLOCK, main, render

README = REPO / "config" / "README.md"


def test_committed_tables_match_the_schema():
    text = README.read_text()
    assert len(BLOCK.findall(text)) >= 3, "config/README.md lost its key markers"
    assert render(text) == text, "stale key tables: run `make config-docs`"


def test_a_changed_schema_is_detected(tmp_path):
    """Not vacuous: a schema description edited without regenerating shows."""
    schema = load_schema()
    schema["properties"]["hub"]["properties"]["dir"]["description"] = "moved"
    text = README.read_text()
    assert render(text, schema) != text
    assert "| `dir` | `hub` |" in render(text, schema)
    stale = tmp_path / "README.md"
    stale.write_text(text.replace("a finished snapshot is never fetched", "x"))
    assert main(["--check", "--readme", str(stale)]) == 1
    assert main(["--readme", str(stale)]) == 0
    assert main(["--check", "--readme", str(stale)]) == 0


def test_every_row_has_key_default_and_meaning():
    for line in render(README.read_text()).splitlines():
        if line.startswith("| `") and line.count(" | ") >= 3:
            key, default, _allowed, meaning = line.strip("|").split(" | ")[:4]
            assert key and default and meaning.strip(), line
