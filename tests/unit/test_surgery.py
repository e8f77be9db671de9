"""Adapter surgery: zeroed lora_B columns, same PEFT format, exact effect."""

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch
from conftest import make_tiny_qwen
from numerics import reorder_tol
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open

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


# Tests added from mutation testing (`make mutation SESSIONS=surgery`).


@pytest.fixture(scope="module")
def rank2_adapter(tmp_path_factory):
    """A rank-2 LoRA on two modules: each layer owns two rank slots."""
    path = tmp_path_factory.mktemp("adapter2") / "rank2"
    cfg = LoraConfig(
        r=2,
        lora_alpha=16,
        target_modules=["q_proj", "down_proj"],
        init_lora_weights=False,
    )
    get_peft_model(_tiny_base(), cfg).save_pretrained(path)
    return path


def _tensors(path):
    with safe_open(path / "adapter_model.safetensors", framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_ablating_one_rank_slot_zeroes_only_its_column(rank2_adapter, tmp_path):
    """A component is one rank slot: its lora_B column goes, the other stays."""
    table = component_table(rank2_adapter)
    row = table.filter(pl.col("rank_slot") == 1).row(0, named=True)
    mask = (table["index"] == row["index"]).to_numpy()
    ablate_adapter(rank2_adapter, tmp_path / "slot1", mask)
    before, _ = _tensors(rank2_adapter)
    after, _ = _tensors(tmp_path / "slot1")
    for key, b in before.items():
        a = after[key]
        if key.endswith(f"{row['name']}.lora_B.weight"):
            assert (a[:, 1] == 0).all() and bool((b[:, 1] != 0).any())
            torch.testing.assert_close(a[:, 0], b[:, 0], rtol=0, atol=0)
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the record names the direction (rank 1 records have no rank_slot key)
    record = json.loads((tmp_path / "slot1" / "ablation.json").read_text())
    assert record["ablated"] == [
        {"index": row["index"], "layer": row["layer"], "module": row["module"],
         "rank_slot": 1}
    ]  # fmt: skip


def test_weights_file_keeps_names_shapes_dtypes_and_metadata(adapter, tmp_path):
    table = component_table(adapter)
    ablate_adapter(adapter, tmp_path / "attn", ablation_mask(table, groups="attn"))
    before, meta_before = _tensors(adapter)
    after, meta_after = _tensors(tmp_path / "attn")
    assert meta_before  # PEFT writes {"format": "pt"}
    assert meta_after == meta_before
    assert {k: (v.shape, v.dtype) for k, v in after.items()} == {
        k: (v.shape, v.dtype) for k, v in before.items()
    }


def test_provenance_names_source_and_ablated_components(adapter, tmp_path):
    table = component_table(adapter)
    mask = ablation_mask(table, groups="mlp", layers=[1])
    ablate_adapter(adapter, tmp_path / "mlp1", mask)
    record = json.loads((tmp_path / "mlp1" / ABLATION_FILE).read_text())
    want = table.filter(pl.Series(mask)).select("index", "layer", "module")
    assert record == {
        "source": str(adapter),
        "n_ablated": 3,
        "n_components": table.height,
        "ablated": want.to_dicts(),
    }
    assert [r["module"] for r in record["ablated"]] == ["gate", "up", "down"]


def test_rerun_replaces_the_previous_output(adapter, tmp_path):
    """A second ablation into the same folder (a rerun) replaces the first."""
    table = component_table(adapter)
    out = tmp_path / "variant"
    ablate_adapter(adapter, out, ablation_mask(table, groups="attn"))
    (out / "stale.txt").write_text("from the first run")
    ablate_adapter(adapter, out, ablation_mask(table, groups="mlp"))
    assert json.loads((out / ABLATION_FILE).read_text())["n_ablated"] == 2 * 3
    assert not (out / "stale.txt").exists()


def test_integer_mask_and_subfolders(adapter, tmp_path):
    """A 0/1 mask counts as boolean; sub-folders (checkpoints) are not copied."""
    src = tmp_path / "src"
    shutil.copytree(adapter, src)
    (src / "checkpoint-1").mkdir()
    (src / "checkpoint-1" / "x.bin").write_bytes(b"x")
    table = component_table(src)
    ones = [int(g == "attn") for g in table["group"]]
    ablated = ablate_adapter(src, tmp_path / "out", ones)
    assert ablated.height == 8 and set(ablated["group"]) == {"attn"}
    assert not (tmp_path / "out" / "checkpoint-1").exists()


def test_empty_intersection_is_refused_naming_the_criteria(adapter):
    """Criteria that each match something but not together select nothing."""
    table = component_table(adapter)
    with pytest.raises(ValueError, match="ablation selects no component: .*gate"):
        ablation_mask(table, groups="attn", modules=["gate"])
