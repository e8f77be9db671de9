"""core.saes.load_sae: the safetensors reader computes what SAELens computes,
bit for bit, for every architecture train_sae saves; other layouts go to
SAELens; a missing config or a non-finite weight fails naming the file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import load_file, save_file

from lorascope.core.saes import SavedSae, load_sae
from lorascope.sae.architectures import ARCHITECTURES
from lorascope.sae.config import SaeConfig
from lorascope.sae.training import train_on_shards

D_IN = 12


class Rows:
    """The part of a ShardSet that train_on_shards reads, over one tensor."""

    def __init__(self, x_ND):
        self.x_ND = x_ND
        self.n_tokens, self.n_components = x_ND.shape

    def iter_batches(self, batch_size, shuffle=False, seed=0):
        return iter(self.x_ND.split(batch_size))


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def saved(request, tmp_path_factory):
    """A small SAE of each architecture, trained a few steps and saved."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_ND = torch.randn(1024, D_IN) * torch.linspace(0.1, 3, D_IN)
    cfg = SaeConfig.from_config({"sae": dict(
        architecture=request.param, k=3, expansion=2, batch_size=128, epochs=2,
        seed=0, dead_feature_window=5, shuffle_buffer_tokens=0, device="cpu",
        log_every=10, jumprelu_l0_coefficient=0.3, matryoshka_fractions=[0.5],
    )})  # fmt: skip
    model_dir = tmp_path_factory.mktemp(request.param) / "model"
    train_on_shards(Rows(x_ND), cfg, model_dir)
    return model_dir, x_ND


def test_reader_equals_saelens(saved):
    model_dir, x_ND = saved
    ours, theirs = load_sae(model_dir), SAE.load_from_disk(model_dir)
    assert isinstance(ours, SavedSae)
    assert ours.cfg.architecture() == theirs.cfg.architecture()
    assert (ours.cfg.d_in, ours.cfg.d_sae) == (theirs.cfg.d_in, theirs.cfg.d_sae)
    with torch.no_grad():
        z_ours, z_theirs = ours.encode(x_ND), theirs.encode(x_ND)
        assert torch.equal(z_ours, z_theirs)
        assert (z_ours != 0).any()  # the comparison is not of two zero maps
        assert torch.equal(ours.decode(z_ours), theirs.decode(z_theirs))
        assert torch.equal(ours.W_dec, theirs.W_dec)


def test_other_layouts_load_through_saelens(saved, tmp_path):
    """A layout the reader does not cover (here SAELens's run-time
    normalisation, which train_sae never saves) is SAELens's to load."""
    model_dir, x_ND = saved
    other = tmp_path / "model"
    shutil.copytree(model_dir, other)
    cfg = json.loads((other / "cfg.json").read_text())
    cfg["normalize_activations"] = "constant_norm_rescale"
    (other / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(other)
    assert isinstance(sae, SAE)
    with torch.no_grad():
        assert torch.equal(sae.encode(x_ND), SAE.load_from_disk(other).encode(x_ND))


def test_missing_config_and_nonfinite_weights_fail_clearly(saved, tmp_path):
    model_dir, _ = saved
    with pytest.raises(FileNotFoundError, match="no SAELens cfg.json"):
        load_sae(tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    weights = load_file(bad / "sae_weights.safetensors")
    weights["W_dec"][0, 0] = float("nan")
    save_file(weights, bad / "sae_weights.safetensors")
    with pytest.raises(ValueError, match="sae_weights.safetensors"):
        load_sae(bad)
