"""Adapter surgery: zeroed lora_B columns, same PEFT format, exact effect."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from conftest import make_tiny_qwen
from numerics import reorder_tol
from peft import LoraConfig, PeftModel, get_peft_model

from lorascope.adapters.surgery import ABLATION_FILE, ablate_adapter, ablation_mask
from lorascope.core.components import component_table

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny_base():
    return make_tiny_qwen(64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A rank-1 LoRA with non-zero B (init_lora_weights=False), saved by PEFT."""
    path = tmp_path_factory.mktemp("adapter") / "rank1"
    cfg = LoraConfig(
        r=1,
        lora_alpha=16,
        use_rslora=True,
        target_modules=TARGETS,
        init_lora_weights=False,
    )
    get_peft_model(_tiny_base(), cfg).save_pretrained(path)
    return path


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _load(path, dtype=torch.float32):
    return PeftModel.from_pretrained(_tiny_base().to(dtype), str(path)).eval()


def _same_logits(got, want):
    """Equal up to summation order (float64; tests/support/numerics.py): the saved
    adapter and the live-zeroed one may run different kernels."""
    tol = reorder_tol(torch.float64, n=64, depth=2 * 8 + 2, scale=want.abs().max())
    torch.testing.assert_close(got, want, **tol)


def test_attention_ablation_zeroes_exactly_the_attention_b(adapter, tmp_path):
    table = component_table(adapter)
    out = tmp_path / "attn"
    ablated = ablate_adapter(adapter, out, ablation_mask(table, groups="attn"))
    assert sorted(set(ablated["module"])) == ["k", "o", "q", "v"]
    assert ablated.height == 2 * 4
    assert component_table(out).equals(table)  # same modules, same order
    assert json.loads((adapter / "adapter_config.json").read_text()) == json.loads(
        (out / "adapter_config.json").read_text()
    )
    assert json.loads((out / ABLATION_FILE).read_text())["n_ablated"] == 8

    model = _load(out)
    for name, mod in model.named_modules():
        if hasattr(mod, "lora_B") and "default" in mod.lora_B:
            b = mod.lora_B["default"].weight
            is_attn = ".self_attn." in name
            assert bool((b == 0).all()) == is_attn, name


def test_ablated_adapter_equals_zeroing_in_memory(adapter, tmp_path):
    """The saved derived adapter behaves like the original with B zeroed live."""
    table = component_table(adapter)
    mask = ablation_mask(table, groups="mlp", layers=[1])
    ablate_adapter(adapter, tmp_path / "mlp1", mask)
    ids = torch.randint(0, 64, (2, 9))

    f64 = torch.float64
    reference = _load(adapter, f64)
    with torch.no_grad():
        for name in table.filter(pl.Series(mask))["name"]:
            mod = reference.get_submodule("base_model.model." + name)
            mod.lora_B["default"].weight.zero_()
    want = _logits(reference, ids)
    _same_logits(_logits(_load(tmp_path / "mlp1", f64), ids), want)
    # and it is not a no-op
    assert (_logits(_load(adapter, f64), ids) - want).abs().max() > 1e-3


def test_ablating_everything_gives_the_base_model(adapter, tmp_path):
    table = component_table(adapter)
    ablate_adapter(adapter, tmp_path / "none", np.ones(table.height, dtype=bool))
    ids = torch.randint(0, 64, (1, 7))
    f64 = torch.float64
    want = _logits(_tiny_base().to(f64), ids)
    _same_logits(_logits(_load(tmp_path / "none", f64), ids), want)


def test_bad_selection_fails_and_writes_nothing(adapter, tmp_path):
    table = component_table(adapter)
    with pytest.raises(ValueError, match="no component has layer in \\[7\\]"):
        ablation_mask(table, layers=[7])
    with pytest.raises(ValueError, match="mask has shape"):
        ablate_adapter(adapter, tmp_path / "x", np.ones(3, dtype=bool))
    assert not (tmp_path / "x").exists()
