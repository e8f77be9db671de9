"""config/README.md's key tables are generated from the schema (make config-docs)."""

from conftest import REPO

from lorascope.core.config import load_schema
from lorascope.workflow.config_docs import BLOCK, main, render, section_table

README = REPO / "config" / "README.md"


def test_committed_tables_match_the_schema():
    text = README.read_text()
    assert len(BLOCK.findall(text)) >= 14, "config/README.md lost its key markers"
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


def test_nested_values_maps_and_shared_schemas_get_rows():
    """A nullable object with a default (toy.pretrain.chat_phase) gets its own
    row and its keys' rows (no default: "—"); a map of named entries
    (toy.benchmarks) its row and `{name}` rows; sibling objects sharing one
    schema (autointerp.kind_overrides.*) collapse into one set of rows."""
    toy = section_table("toy")
    assert "| `pretrain.chat_phase` | `{steps: 100," in toy
    assert "| `pretrain.chat_phase.steps` | — | integer, >= 1 |" in toy
    assert "| `benchmarks.{name}.digits` | — | integer, >= 1, <= 9; or array |" in toy
    auto = section_table("autointerp")
    assert "| `kind_overrides.{lora,mlp,sae}.n_contexts` | `null` |" in auto
    assert "`kind_overrides.lora.n_contexts`" not in auto
    assert "| `benchmark_files` | `{}` | object of string |" in section_table("eval")
