"""The component table: order, ranks, clear errors on the wrong adapter."""

import json

import pytest
from conftest import add_random_lora, make_tiny_qwen

from lorascope.core.components import (
    MODULE_ORDER,
    AdapterError,
    check_adapter,
    component_labels,
    component_table,
    lora_modules,
    select,
    table_rank,
)


def test_table_order_and_shapes(tiny_adapter_dir):
    t = component_table(tiny_adapter_dir)
    assert t.height == 2 * 7  # 2 layers x 7 modules, rank 1
    assert t["index"].to_list() == list(range(14))
    assert t["module"].to_list() == list(MODULE_ORDER) * 2
    assert t["layer"].to_list() == [0] * 7 + [1] * 7
    row = t.row(5, named=True)  # layer 0 up_proj: 32 -> 64
    assert (row["module"], row["group"], row["d_in"], row["d_out"]) == (
        "up",
        "mlp",
        32,
        64,
    )
    check_adapter(tiny_adapter_dir, rank=1)


def test_model_order_matches_file_order(tiny_lora, tiny_adapter_dir):
    from_model = [m.name for m, _ in lora_modules(tiny_lora)]
    assert from_model == component_table(tiny_adapter_dir)["name"].to_list()


def test_rank2_gives_two_slots(tmp_path, toy_tokenizer):
    add_random_lora(make_tiny_qwen(len(toy_tokenizer)), r=2).save_pretrained(tmp_path)
    t = component_table(tmp_path)
    assert t.height == 28 and t["rank_slot"].to_list()[:2] == [0, 1]
    with pytest.raises(AdapterError, match="rank \\[2\\] found, rank 1 required"):
        check_adapter(tmp_path, rank=1)
    # every output names a rank > 1 scalar by its direction, the first too
    assert table_rank(t) == 2
    assert component_labels(t)[:4] == ["L0.q#0", "L0.q#1", "L0.k#0", "L0.k#1"]
    assert component_labels(t)[-1] == "L1.down#1"


def test_rank1_labels_have_no_direction(tiny_adapter_dir):
    t = component_table(tiny_adapter_dir)
    assert table_rank(t) == 1
    assert component_labels(t)[:3] == ["L0.q", "L0.k", "L0.v"]


def test_llama_architecture(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
    )
    targets = [f"{m}_proj" for m in MODULE_ORDER]
    peft = get_peft_model(
        LlamaForCausalLM(cfg), LoraConfig(r=1, target_modules=targets)
    )
    peft.save_pretrained(tmp_path)
    t = component_table(tmp_path)
    assert t.height == 21 and t["layer"].max() == 2
    check_adapter(tmp_path, rank=1)


def test_missing_target_modules(tmp_path, toy_tokenizer):
    from peft import LoraConfig, get_peft_model

    model = make_tiny_qwen(len(toy_tokenizer))
    get_peft_model(
        model, LoraConfig(r=1, target_modules=["q_proj", "v_proj"])
    ).save_pretrained(tmp_path)
    with pytest.raises(AdapterError, match="missing target modules"):
        check_adapter(tmp_path, rank=1)


def test_corrupt_adapter_names_the_file(tmp_path, tiny_adapter_dir):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_adapter_dir, bad)
    (bad / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(AdapterError, match="adapter_model.safetensors"):
        component_table(bad)
    with pytest.raises(AdapterError, match="not a PEFT adapter"):
        component_table(tmp_path / "nowhere")


def test_select(tiny_adapter_dir):
    t = component_table(tiny_adapter_dir)
    assert select(t, groups="attn").sum() == 8
    assert select(t, layers=[1], modules=["gate", "up"]).tolist().count(True) == 2
    assert select(t, indices=[0, 3]).sum() == 2
    with pytest.raises(ValueError, match="module"):
        select(t, modules=["qkv"])


def test_adapter_config_has_unpacked_names(tiny_adapter_dir):
    cfg = json.loads((tiny_adapter_dir / "adapter_config.json").read_text())
    assert "qkv_proj" not in json.dumps(cfg)
