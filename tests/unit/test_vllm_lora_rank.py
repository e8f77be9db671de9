"""The LoRA slot rank of a vLLM engine (eval.vllm.max_lora_rank; null = sized
to the adapters served). The real engine takes the null path in
tests/workflow/test_vllm.py; here the choice itself, without vLLM."""

import json
import sys
import types
from typing import Literal

import pytest

from lorascope.evaluation.vllm_engine import _engine_lora_rank, adapter_rank


def _adapter(tmp_path, name, **cfg):
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    return d


def test_adapter_rank_is_the_largest_of_r_and_rank_pattern(tmp_path):
    assert adapter_rank(_adapter(tmp_path, "a", r=1)) == 1
    assert adapter_rank(_adapter(tmp_path, "b", r=2, rank_pattern=None)) == 2
    wide = _adapter(tmp_path, "c", r=4, rank_pattern={"q_proj": 16, "v_proj": 2})
    assert adapter_rank(wide) == 16


@pytest.fixture
def accepted(monkeypatch):
    """vLLM's list of accepted slot ranks (vllm/config/lora.py, MaxLoRARanks)."""
    lora = types.ModuleType("vllm.config.lora")
    lora.MaxLoRARanks = Literal[1, 8, 16, 32]
    for name, mod in (("vllm", types.ModuleType("vllm")),
                      ("vllm.config", types.ModuleType("vllm.config")),
                      ("vllm.config.lora", lora)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.mark.parametrize(
    ("ranks", "want"), [([1], 1), ([1, 2], 8), ([8], 8), ([9], 16)]
)
def test_null_takes_the_smallest_accepted_rank_that_holds_every_adapter(
    accepted, ranks, want
):
    assert _engine_lora_rank(None, ranks) == want


def test_a_set_rank_is_used_as_given(accepted):
    assert _engine_lora_rank(8, [1]) == 8


def test_a_rank_above_every_accepted_one_fails_naming_it(accepted):
    with pytest.raises(ValueError, match=r"rank 64 is above .*\[1, 8, 16, 32\]"):
        _engine_lora_rank(None, [1, 64])


def test_a_vllm_without_the_list_asks_for_the_key(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm.config.lora", None)  # import fails
    with pytest.raises(
        RuntimeError, match=r"set eval.vllm.max_lora_rank \(at least 2\)"
    ):
        _engine_lora_rank(None, [2])
