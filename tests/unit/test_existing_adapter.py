"""An existing adapter instead of training: checked against the config, copied."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import TARGETS

from lorascope.core.components import AdapterError
from lorascope.train.existing import (
    SOURCE_FILE,
    check_existing_adapter,
    import_adapter,
)

LORA = {"r": 1, "target_modules": TARGETS}


@pytest.fixture()
def adapter(tiny_adapter_dir, tmp_path):
    """The tiny rank-1 adapter, declaring the base it was trained on."""
    path = tmp_path / "published"
    shutil.copytree(tiny_adapter_dir, path)
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "Org/Base-7B-Instruct"
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    return path


def test_matching_adapter_passes_for_hub_id_or_local_copy(adapter):
    check_existing_adapter(adapter, LORA, "Org/Base-7B-Instruct")
    # a local snapshot of the same model (hub.prefetch) is the same base
    snap = "hub/model/Org--Base-7B-Instruct@main"
    check_existing_adapter(adapter, LORA, snap, base_repo="Org/Base-7B-Instruct")
    check_existing_adapter(adapter, LORA, "/models/Base-7B-Instruct")


@pytest.mark.parametrize(
    "lora,base,match",
    [
        ({"r": 2, "target_modules": TARGETS}, "Org/Base-7B-Instruct", "train.lora.r"),
        ({"r": 1, "target_modules": TARGETS[:4]}, "Org/Base-7B-Instruct", "adapts"),
        (LORA, "Org/Other-32B", "model.base is 'Org/Other-32B'"),
    ],
)
def test_mismatches_name_the_key_to_change(adapter, lora, base, match):
    with pytest.raises(AdapterError, match=match):
        check_existing_adapter(adapter, lora, base)


def test_base_check_can_be_switched_off(adapter):
    check_existing_adapter(adapter, LORA, "Org/Renamed", check_base=False)


def test_import_copies_with_provenance_and_fails_atomically(adapter, tmp_path):
    out = tmp_path / "train" / "rank1" / "adapter"
    files = import_adapter(adapter, out, {"repo_id": "Org/Published"})
    assert "adapter_model.safetensors" in files and SOURCE_FILE in files
    assert json.loads((out / SOURCE_FILE).read_text()) == {"repo_id": "Org/Published"}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterError, match="missing"):
        import_adapter(broken, tmp_path / "out2", {})
    assert not (tmp_path / "out2").exists()


def peft_adapter(path, layers=2, **lora):
    """A rank-1 adapter PEFT saves for the tiny model with `lora` settings."""
    from conftest import make_tiny_qwen
    from peft import LoraConfig, get_peft_model

    model = make_tiny_qwen(50, layers=layers)
    cfg = LoraConfig(r=1, target_modules=TARGETS, init_lora_weights=False, **lora)
    get_peft_model(model, cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "lora,field",
    [
        ({"modules_to_save": ["lm_head"]}, "modules_to_save = ['lm_head']"),
        ({"use_dora": True}, "use_dora = true"),
        ({"bias": "lora_only"}, "bias = 'lora_only'"),
        ({"lora_bias": True}, "lora_bias = true"),
    ],
)
def test_anything_trained_besides_lora_factors_is_refused(tmp_path, lora, field):
    adapter = peft_adapter(tmp_path / "a", **lora)
    with pytest.raises(AdapterError) as err:
        check_existing_adapter(adapter, LORA, "x", check_base=False, n_layers=2)
    assert str(err.value).startswith(f"{adapter / 'adapter_config.json'}: {field}")
    assert "outside its LoRA components" in str(err.value)


def test_stray_tensors_are_named_even_when_the_config_is_silent(tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = peft_adapter(tmp_path / "a")
    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    name = "base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector"
    tensors[name] = torch.ones(64)
    save_file(tensors, weights)
    with pytest.raises(AdapterError, match=f"{weights}: tensors that are not LoRA"):
        check_existing_adapter(adapter, LORA, "x", check_base=False)


def test_every_layer_of_the_base_must_carry_the_targets(tmp_path):
    adapter = peft_adapter(tmp_path / "a", layers=3, layers_to_transform=[0, 2])
    check_existing_adapter(adapter, LORA, "x", check_base=False)  # count unknown
    with pytest.raises(AdapterError) as err:
        check_existing_adapter(adapter, LORA, "x", check_base=False, n_layers=3)
    assert str(err.value) == (
        f"{adapter}: no LoRA on layers [1] of the base model's 3 "
        "(adapter_config.json: layers_to_transform = [0, 2]): every stage here "
        "compares all layers"
    )
    whole = peft_adapter(tmp_path / "b", layers=2)
    with pytest.raises(AdapterError, match=r"no LoRA on layers \[2, 3\] of the base"):
        check_existing_adapter(whole, LORA, "x", check_base=False, n_layers=4)


def test_base_layers_come_from_the_base_config(tmp_path):
    from lorascope.train.existing import base_layers

    (tmp_path / "config.json").write_text('{"num_hidden_layers": 64}')
    assert base_layers(str(tmp_path)) == 64
    (tmp_path / "config.json").write_text('{"text_config": {"num_hidden_layers": 5}}')
    assert base_layers(str(tmp_path)) == 5
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AdapterError, match="config.json: no num_hidden_layers"):
        base_layers(str(tmp_path))


def test_a_local_dora_adapter_stops_the_run_at_validation(tmp_path):
    from lorascope.core.config import ConfigError, validate

    adapter = peft_adapter(tmp_path / "dora", use_dora=True)
    with pytest.raises(ConfigError, match="model.adapter: .*use_dora = true"):
        validate({"model": {"adapter": str(adapter)}})
