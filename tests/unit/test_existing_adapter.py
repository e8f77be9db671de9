"""An existing adapter instead of training: checked against the config, copied."""

from __future__ import annotations

import json
import shutil

import pytest
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
