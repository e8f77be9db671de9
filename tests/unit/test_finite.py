"""NaN/Inf in an artifact a rule reads fails naming the file, tensor and rows.

Issue 33, item 8: adapters (lora_B), saved SAEs (a decoder row), activation
shards (a token row), and a truncated SAE file.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorascope.core.finite import CorruptArtifact, check_finite
from lorascope.core.models import load_causal_lm, load_lora_model
from lorascope.core.saes import load_sae
from lorascope.core.shards import open_shards


def test_check_finite_names_source_tensor_and_rows():
    w = torch.zeros(6, 3)
    w[4, 1] = float("nan")
    w[2, 0] = float("inf")
    check_finite({"ok": torch.ones(2), "ids": torch.arange(3)}, "f.safetensors")
    with pytest.raises(CorruptArtifact) as e:
        check_finite({"W": w}, "f.safetensors")
    msg = str(e.value)
    assert "f.safetensors" in msg and "'W'" in msg and "NaN/Inf" in msg
    assert "2 row(s) of dim 0 [2, 4]" in msg and "first at index [2, 0]" in msg


@pytest.fixture()
def saved_sae(tmp_path):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    d = tmp_path / "sae"
    JumpReLUSAE(JumpReLUSAEConfig(d_in=4, d_sae=8)).save_model(str(d))
    return d


def test_nan_row_in_sae_decoder_is_named(saved_sae):
    load_sae(saved_sae)  # a clean SAE loads
    path = saved_sae / "sae_weights.safetensors"
    tensors = load_file(path)
    tensors["W_dec"][5] = float("nan")  # one latent's decoder row
    save_file(tensors, path)
    with pytest.raises(
        CorruptArtifact, match=r"sae_weights.safetensors.*'W_dec'.*\[5\]"
    ):
        load_sae(saved_sae)


def test_truncated_sae_file_is_named(saved_sae):
    path = saved_sae / "sae_weights.safetensors"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CorruptArtifact, match="sae_weights.safetensors: unreadable"):
        load_sae(saved_sae)


def test_nan_in_lora_b_is_named(tiny_model_dir, tiny_adapter_dir, tmp_path):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    path = adapter / "adapter_model.safetensors"
    tensors = load_file(path)
    key = sorted(k for k in tensors if "lora_B" in k and "layers.1.mlp.up" in k)[0]
    tensors[key][3, 0] = float("nan")
    save_file(tensors, path)
    base = load_causal_lm(str(tiny_model_dir), device="cpu")
    with pytest.raises(CorruptArtifact, match=rf"adapter_model.safetensors.*{key}"):
        load_lora_model(base, adapter)


def test_nan_in_a_shard_is_named(tmp_path):
    from lorascope.activations.shard_writer import write_manifest, write_shard

    acts = torch.randn(6, 3)
    acts[4, 2] = float("nan")  # token 4
    n = acts.shape[0]
    rec = write_shard(
        tmp_path / "shards", 0, acts, torch.zeros(n, dtype=torch.int64),
        torch.arange(n, dtype=torch.int32), torch.zeros(n, dtype=torch.int32),
        rows=(0, 1), fingerprint="fp",
    )  # fmt: skip
    write_manifest(tmp_path, [rec], ["c0", "c1", "c2"], {})
    shards = open_shards(tmp_path)  # checksums are fine: the NaN was written
    with pytest.raises(
        CorruptArtifact, match=r"shard-00000.safetensors.*'acts'.*\[4\]"
    ):
        next(shards.iter_shards())
