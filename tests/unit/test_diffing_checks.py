"""A full fine-tune that cannot be diffed against the base fails naming both
(lorascope.diffing.checks), before any job (workflow/rules/diffing.smk)."""

import json
import shutil
from pathlib import Path

import pytest

from lorascope.diffing.checks import (
    compatibility_problems,
    require_compatible,
    tokenizer_digest,
)

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "resources" / "toy" / "base_model"


def copy_model(tmp_path, name, edit=None, tokenizer_edit=None):
    folder = tmp_path / name
    folder.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOY / f, folder / f)
    if edit:
        cfg = json.loads((folder / "config.json").read_text())
        edit(cfg)
        (folder / "config.json").write_text(json.dumps(cfg))
    if tokenizer_edit:
        tok = json.loads((folder / "tokenizer.json").read_text())
        tokenizer_edit(tok)
        (folder / "tokenizer.json").write_text(json.dumps(tok))
    return folder


def test_same_model_is_compatible(tmp_path):
    full = copy_model(tmp_path, "full")
    assert compatibility_problems(TOY, full, "base-id", "full-id") == []
    assert tokenizer_digest(full) == tokenizer_digest(TOY)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hidden_size", 256),
        ("num_hidden_layers", 6),
        ("model_type", "llama"),
        ("architectures", ["LlamaForCausalLM"]),
        ("vocab_size", 300),
    ],
)
def test_a_different_shape_names_the_key_and_both_models(tmp_path, key, value):
    full = copy_model(tmp_path, "full", edit=lambda c: c.__setitem__(key, value))
    with pytest.raises(ValueError, match=key) as err:
        require_compatible(TOY, full, "Qwen/base", "org/full-ft")
    assert "Qwen/base" in str(err.value) and "org/full-ft" in str(err.value)


def test_a_different_tokenizer_is_named(tmp_path):
    def swap(tok):  # two tokens trade ids: same size, other vocabulary
        vocab = tok["model"]["vocab"]
        a, b = list(vocab)[10:12]
        vocab[a], vocab[b] = vocab[b], vocab[a]

    full = copy_model(tmp_path, "full", tokenizer_edit=swap)
    (problem,) = compatibility_problems(TOY, full, "base", "full")
    assert problem.startswith("tokenizer:") and "base" in problem


def test_nested_text_config_is_read(tmp_path):
    """A multimodal config keeps the decoder's sizes under text_config."""

    def nest(cfg):
        cfg["text_config"] = {"hidden_size": 64}

    full = copy_model(tmp_path, "full", edit=nest)
    (problem,) = compatibility_problems(TOY, full, "base", "full")
    assert "hidden_size: 128" in problem and "64" in problem
