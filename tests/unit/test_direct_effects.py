"""Rule direct_effects reads only the tensors it needs: the PEFT model built
on the meta device, lora_B, the final norm and the unembedding read from
their safetensors files. Its table equals the one a fully loaded model
gives (the path it replaced), tied or not, float32 or bfloat16, one file or
sharded; and it fails naming what is missing."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from conftest import add_random_lora, make_tiny_qwen

from lorascope.causal.direct_effects import (
    adapter_writes,
    direct_effects,
    model_head,
    read_head,
    writes,
)
from lorascope.core.models import load_causal_lm, load_lora_model, load_lora_skeleton
from lorascope.core.weights import INDEX, WeightsError, read_tensors

VOCAB = 97


def _save(tmp_path, tied: bool, shard: str | None = None):
    """A tiny Qwen2 base and a random rank-1 LoRA on it, as saved dirs."""
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    model = make_tiny_qwen(VOCAB, layers=3, hidden=32, tie_word_embeddings=tied)
    model.save_pretrained(base, max_shard_size=shard or "10GB")
    lora = make_tiny_qwen(VOCAB, layers=3, hidden=32, tie_word_embeddings=tied)
    add_random_lora(lora, seed=1).save_pretrained(adapter)
    return str(base), str(adapter)


def _table(norm_D, unembed_XD, write_CD):
    keys = pl.DataFrame(
        {"kind": ["lora"] * len(write_CD), "feature": list(range(len(write_CD))),
         "label": ["x"] * len(write_CD)}
    )  # fmt: skip
    return direct_effects(
        norm_D, unembed_XD, write_CD, keys, lambda ids: [str(i) for i in ids], 5
    )


@pytest.mark.parametrize(
    "tied,dtype,shard",
    [(True, "float32", None), (False, "float32", None),
     (False, "bfloat16", None), (True, "float32", "20KB")],
)  # fmt: skip
def test_file_path_equals_the_loaded_model(tmp_path, tied, dtype, shard):
    base, adapter = _save(tmp_path, tied, shard)
    if shard:
        assert (tmp_path / "base" / INDEX).is_file()  # really sharded
    full = load_lora_model(load_causal_lm(base, dtype=dtype, device="cpu"), adapter)
    skeleton = load_lora_skeleton(base, adapter, dtype)
    assert all(p.is_meta for n, p in skeleton.named_parameters() if "lora_" not in n)
    want_CD, want_C = writes(full)
    got_CD, got_C = adapter_writes(skeleton, adapter)
    assert torch.equal(got_CD, want_CD) and (got_C == want_C).all()
    assert want_C.sum() == 6  # o and down of 3 layers write the residual
    want_head = model_head(full)
    got_head = read_head(skeleton, base, None, getattr(torch, dtype))
    for got, want in zip(got_head, want_head, strict=True):
        assert torch.equal(got, want)
    got = _table(*got_head, got_CD)
    assert got.height > 0
    assert got.equals(_table(*want_head, want_CD))


def test_only_the_shards_holding_the_head_are_read(tmp_path):
    """Delete every shard but those holding the final norm and the
    unembedding: the head is still read (no other file is opened)."""
    import json

    base, adapter = _save(tmp_path, tied=False, shard="20KB")
    weight_map = json.loads((tmp_path / "base" / INDEX).read_text())["weight_map"]
    keep = {weight_map["model.norm.weight"], weight_map["lm_head.weight"]}
    shards = set(weight_map.values())
    assert len(shards) > len(keep)
    for name in shards - keep:
        (tmp_path / "base" / name).unlink()
    skeleton = load_lora_skeleton(base, adapter)
    norm_D, unembed_XD = read_head(skeleton, base, None, torch.float32)
    assert unembed_XD.shape == (VOCAB, 32) and norm_D.shape == (32,)


def test_missing_tensors_and_files_fail_naming_them(tmp_path):
    base, adapter = _save(tmp_path, tied=False)
    with pytest.raises(WeightsError, match="no tensor 'lm_head.nope'"):
        read_tensors(base, ["model.norm.weight", "lm_head.nope"])
    skeleton = load_lora_skeleton(base, adapter)
    (tmp_path / "base" / "model.safetensors").rename(tmp_path / "elsewhere")
    with pytest.raises(WeightsError, match="no model.safetensors.index.json and no"):
        read_head(skeleton, base, None, torch.float32)
