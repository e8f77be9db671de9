"""Export of the SAE (a SAELens dir with provenance) and of its features
(Neuronpedia-style JSON): loaded back with sae_lens itself."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch
from sae_lens import SAE

from lorascope.core.saes import load_sae
from lorascope.dashboards.export import adapter_provenance, export_sae, features_json
from lorascope.sae.config import SaeConfig
from lorascope.sae.training import save_sae, shuffled_batches, train_sae

D = 6


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    torch.manual_seed(0)
    x = torch.randn(1024, D)
    cfg = SaeConfig.from_config({"sae": dict(
        k=2, expansion=2, batch_size=128, epochs=1, seed=0, device="cpu",
        dead_feature_window=10, shuffle_buffer_tokens=0, log_every=10,
    )})  # fmt: skip
    out = train_sae(cfg, shuffled_batches(lambda e: [x], 128), D, 1024)
    path = tmp_path_factory.mktemp("sae") / "model"
    save_sae(out.sae, path)
    return path


def components():
    mods = ["q", "k", "v", "o", "gate", "up"]
    return pl.DataFrame({
        "index": list(range(D)), "layer": [0] * D, "module": mods,
        "rank_slot": [0] * D, "name": [f"layers.0.{m}" for m in mods],
    })  # fmt: skip


def test_export_loads_with_sae_lens_and_names_its_provenance(sae_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "SOURCE.json").write_text(
        json.dumps({"repo_id": "jnward2/qwen-reasoning-lora", "commit": "abc123"})
    )
    model_cfg = {"base": "Qwen/Qwen2.5-32B-Instruct", "revision": "main",
                 "adapter": "jnward2/qwen-reasoning-lora"}  # fmt: skip
    prov = adapter_provenance(adapter, model_cfg)
    export_sae(sae_dir, tmp_path / "export", prov, components().reverse())
    sae = SAE.load_from_disk(tmp_path / "export", device="cpu")
    meta = sae.cfg.metadata
    assert meta.model_name == "Qwen/Qwen2.5-32B-Instruct"
    assert meta.model_revision == "main"
    assert meta.adapter == "jnward2/qwen-reasoning-lora"
    assert meta.adapter_revision == "abc123"
    assert meta.hook_name == "lora_scalars" and "lora_A" in meta.scalar_definition
    assert [c["name"] for c in meta.scalar_layout] == components()["name"].to_list()
    x = torch.randn(16, D)
    torch.testing.assert_close(sae.encode(x), load_sae(sae_dir).encode(x))
    with pytest.raises(ValueError, match="d_in 6 is not the 5 rows"):
        export_sae(sae_dir, tmp_path / "bad", prov, components().head(5))


def test_trained_adapter_provenance(tmp_path):
    prov = adapter_provenance(tmp_path, {"base": "toy", "revision": None})
    assert prov["adapter"].startswith("trained by this run")
    assert prov["adapter_revision"] is None and prov["model_name"] == "toy"


def test_features_json_is_neuronpedia_shaped():
    features = pl.DataFrame({
        "feature": [0, 1], "latent": [3, 7], "label": ["sae.3", "sae.7"],
        "frac_active": [0.1, 0.2], "max": [2.0, float("nan")],
    })  # fmt: skip
    contexts = pl.DataFrame({
        "feature": [0, 0, 0], "rank": [1, 0, 2],
        "tokens": [["a", "b"], ["c", "d"], ["e"]],
        "acts": [[0.0, 1.0], [2.0, 0.5], [0.1]], "value": [1.0, 2.0, 0.1],
        "center": [1, 0, 0], "source": ["top", "both", "sample"],
    })  # fmt: skip
    expl = pl.DataFrame({
        "feature": [0, 1], "explanation": ["token \"Wait\"", None],
        "explainer": ["offline", "offline"], "status": ["ok", "failed"],
    })  # fmt: skip
    scores = pl.DataFrame({"feature": [0], "balanced_accuracy": [0.75],
                           "status": ["ok"]})  # fmt: skip
    doc = features_json(features, contexts, expl, scores, "toy")
    json.dumps(doc, allow_nan=False)  # NaN written as null
    f0, f1 = doc["features"]
    assert f0["index"] == 3 and f0["modelId"] == "toy"
    assert f0["explanations"] == [
        {"description": 'token "Wait"', "explanationModelName": "offline"}
    ]
    # rank order; the random sample's window (source sample) is not listed
    assert [a["maxValue"] for a in f0["activations"]] == [2.0, 1.0]
    assert f0["activations"][0] == {
        "tokens": ["c", "d"], "values": [2.0, 0.5], "maxValue": 2.0,
        "maxValueTokenIndex": 0,
    }  # fmt: skip
    assert f0["scores"] == {"balanced_accuracy": 0.75}
    assert f1["explanations"] == [] and f1["max_act"] is None
