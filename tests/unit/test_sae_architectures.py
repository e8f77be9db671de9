"""sae.architecture: each builder trains through SAETrainer, saves in SAELens's
format, loads back (SAELens and lorascope) and encodes with its own sparsity;
the default (batchtopk) is exactly the pre-architecture training."""

from __future__ import annotations

import math

import pytest
import torch
from sae_lens import SAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.sae import SAEMetadata

from lorascope.causal.feature_kl import SaeMap
from lorascope.core.checks import TOPK_ARCHITECTURES
from lorascope.core.config import ConfigError, load_schema, validate
from lorascope.core.saes import load_sae
from lorascope.sae.architectures import ARCHITECTURES, training_sae_config, uses_k
from lorascope.sae.config import SaeConfig
from lorascope.sae.evaluation import evaluate_sae
from lorascope.sae.features import encode_alive
from lorascope.sae.training import (
    _CurveTrainer,
    shuffled_batches,
    train_on_shards,
    train_sae,
    trainer_config,
)

D_IN, N_ATOMS, K = 16, 24, 2
# What each architecture is saved as (SAELens inference architecture).
SAVED_AS = {
    "batchtopk": "jumprelu",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "matryoshka_batchtopk": "jumprelu",
}


def dictionary_data(n, seed=0):
    """Rows = K random unit atoms with weights in [0.5, 1.5] + a little noise."""
    g = torch.Generator().manual_seed(seed)
    atoms_AD = torch.randn(N_ATOMS, D_IN, generator=g)
    atoms_AD /= atoms_AD.norm(dim=1, keepdim=True)
    idx_NK = torch.rand(n, N_ATOMS, generator=g).argsort(1)[:, :K]
    coef_NA = torch.zeros(n, N_ATOMS).scatter(
        1, idx_NK, 0.5 + torch.rand(n, K, generator=g)
    )
    return coef_NA @ atoms_AD + 0.01 * torch.randn(n, D_IN, generator=g)


class Rows:
    """The part of a ShardSet that train_on_shards reads, over one tensor."""

    def __init__(self, x_ND):
        self.x_ND = x_ND
        self.n_tokens, self.n_components = x_ND.shape

    def iter_batches(self, batch_size, shuffle=False, seed=0):
        x_ND = self.x_ND
        if shuffle:
            perm = torch.randperm(
                len(x_ND), generator=torch.Generator().manual_seed(seed)
            )
            x_ND = x_ND[perm]
        return iter(x_ND.split(batch_size))


def small_cfg(**kw):
    base = dict(
        k=K, expansion=2, batch_size=256, epochs=30, seed=0, dead_feature_window=20,
        shuffle_buffer_tokens=0, device="cpu", log_every=10,
        jumprelu_l0_coefficient=0.3, matryoshka_fractions=[0.25, 0.5],
    )  # fmt: skip
    return SaeConfig.from_config({"sae": base | kw})


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def trained(request, tmp_path_factory):
    """One small SAE per architecture (about 2 s each on one CPU thread)."""
    torch.set_num_threads(1)
    x_ND = dictionary_data(4000)
    model_dir = tmp_path_factory.mktemp(request.param) / "model"
    cfg = small_cfg(architecture=request.param)
    metrics = train_on_shards(Rows(x_ND), cfg, model_dir)
    return dict(arch=request.param, x=x_ND, dir=model_dir, metrics=metrics, cfg=cfg)


def test_saved_sae_loads_both_ways_and_reconstructs(trained):
    arch, x_ND = trained["arch"], trained["x"][:1000]
    ours, theirs = load_sae(trained["dir"]), SAE.load_from_disk(trained["dir"])
    assert ours.cfg.architecture() == theirs.cfg.architecture() == SAVED_AS[arch]
    assert (
        ours.cfg.metadata.training_architecture
        == ARCHITECTURES[arch](trained["cfg"], D_IN, "cpu").architecture()
    )
    with torch.no_grad():
        acts_NF = ours.encode(x_ND)
        assert torch.equal(acts_NF, theirs.encode(x_ND))
        assert (acts_NF >= 0).all()
    m = evaluate_sae(ours, x_ND.split(300))
    assert m["fvu"] < 0.2 and m["d_sae"] == 2 * D_IN
    assert trained["metrics"]["architecture"] == arch
    # k is reported only where it sets the sparsity; a threshold only where saved
    assert ("k" in trained["metrics"]) == (arch in TOPK_ARCHITECTURES)
    assert ("jumprelu_threshold" in trained["metrics"]) == (SAVED_AS[arch] != "topk")


def test_sparsity_semantics(trained):
    arch, x_ND = trained["arch"], trained["x"]
    sae = load_sae(trained["dir"])
    with torch.no_grad():
        l0_N = (sae.encode(x_ND) != 0).sum(1).double()
    if arch == "topk":  # exactly k per token (fewer only where ReLU zeroes one)
        assert int(l0_N.max()) == K and float(l0_N.mean()) > K - 0.1
    elif arch in ("batchtopk", "matryoshka_batchtopk"):
        # k on average, through the one global threshold BatchTopK learned
        assert torch.unique(sae.threshold).numel() == 1
        assert abs(float(l0_N.mean()) - K) < 0.25 * K
    else:  # jumprelu: a learned threshold per latent, no k
        assert arch == "jumprelu" and torch.unique(sae.threshold).numel() > 1
        assert float(l0_N.mean()) < 4 * K


def test_readers_work_for_every_architecture(trained):
    """Feature encoding and the causal affine map read any saved SAE."""
    sae = load_sae(trained["dir"])
    x_ND = trained["x"][:500]
    alive = trained["metrics"]["alive_latents"]
    codes_NF = encode_alive(sae, x_ND, torch.tensor(alive), batch_size=128)
    with torch.no_grad():
        assert torch.equal(codes_NF, sae.encode(x_ND)[:, alive])
    z_NF, recon_NC = SaeMap(sae).codes(x_ND)
    assert z_NF.shape == (500, 2 * D_IN) and recon_NC.shape == x_ND.shape


def test_jumprelu_l0_coefficient_sets_sparsity():
    """A larger jumprelu_l0_coefficient gives fewer active latents."""
    torch.set_num_threads(1)
    x_ND = dictionary_data(4000)
    l0 = {}
    for coef in (0.01, 0.3):
        cfg = small_cfg(architecture="jumprelu", jumprelu_l0_coefficient=coef)
        batches = shuffled_batches(lambda e: Rows(x_ND).iter_batches(256), 256)
        sae = train_sae(cfg, batches, D_IN, len(x_ND)).sae
        with torch.no_grad():
            l0[coef] = float((sae.encode(x_ND) != 0).sum(1).double().mean())
    assert l0[0.3] < l0[0.01] / 2


# --- the default is today's BatchTopK, exactly --------------------------------


def pre_architecture_config(cfg: SaeConfig, n_components: int, device: str):
    """The BatchTopK config as lorascope built it before sae.architecture."""
    return BatchTopKTrainingSAEConfig(
        d_in=n_components,
        d_sae=cfg.d_sae(n_components),
        k=cfg.k,
        topk_threshold_lr=0.01,
        aux_loss_coefficient=cfg.aux_loss_coefficient,
        rescale_acts_by_decoder_norm=True,
        use_sparse_activations=False,
        decoder_init_norm=0.1,
        apply_b_dec_to_input=True,
        normalize_activations=cfg.normalize,
        dtype="float32",
        device=device,
        metadata=SAEMetadata(hook_name="lora_scalars", model_name="lorascope"),
    )


def test_default_builds_the_pre_architecture_config():
    cfg = SaeConfig.from_config({})
    assert cfg.architecture == "batchtopk"
    new = training_sae_config(cfg, 28, "cpu")
    old = pre_architecture_config(cfg, 28, "cpu")
    assert type(new) is type(old) and new.to_dict() == old.to_dict()


def test_default_trains_bitwise_the_pre_architecture_weights():
    torch.set_num_threads(1)
    x_ND = dictionary_data(2048, seed=1)
    cfg = small_cfg(epochs=3)  # architecture left to its default

    def batches():
        return shuffled_batches(lambda e: Rows(x_ND).iter_batches(256, True, e), 256)

    new = train_sae(cfg, batches(), D_IN, len(x_ND))
    # The training path before sae.architecture, with its literal config.
    total = math.floor(cfg.epochs * len(x_ND) / cfg.batch_size) * cfg.batch_size
    torch.manual_seed(cfg.seed)
    old_sae = BatchTopKTrainingSAE(pre_architecture_config(cfg, D_IN, "cpu"))
    trainer = _CurveTrainer(
        trainer_config(cfg, total, "cpu"), old_sae, batches(), log_every=cfg.log_every
    )
    old = trainer.fit()
    new_sd, old_sd = new.sae.state_dict(), old.state_dict()
    assert new_sd.keys() == old_sd.keys()
    assert all(torch.equal(new_sd[key], old_sd[key]) for key in new_sd)
    assert new.curve == trainer.curve


# --- the config key -----------------------------------------------------------


def test_table_matches_schema_and_checks():
    enum = load_schema()["properties"]["sae"]["properties"]["architecture"]["enum"]
    assert list(ARCHITECTURES) == enum
    cfg = SaeConfig.from_config({})
    topk_kinds = {
        name for name, build in ARCHITECTURES.items() if uses_k(build(cfg, D_IN, "cpu"))
    }
    assert topk_kinds == TOPK_ARCHITECTURES


def test_schema_rejects_unknown_architecture_naming_key():
    with pytest.raises(ConfigError, match=r"sae\.architecture: 'gated' is not one"):
        validate({"sae": {"architecture": "gated"}})
    with pytest.raises(ValueError, match=r"sae\.architecture"):
        SaeConfig.from_config({"sae": {"architecture": "gated"}})


def test_topk_needs_a_whole_k():
    validate({"sae": {"architecture": "topk", "k": 4}})
    validate({"sae": {"k": 2.5}})  # batchtopk: k is a mean
    with pytest.raises(ConfigError, match=r"sae\.k: 2\.5 is not of type 'integer'"):
        validate({"sae": {"architecture": "topk", "k": 2.5}})


def test_k_versus_width_only_for_top_k_kinds():
    # The shipped toy model: 28 components, so width 224 at expansion 8.
    with pytest.raises(ConfigError, match=r"sae.k: 225 is larger than .* 224"):
        validate({"sae": {"architecture": "topk", "k": 225, "expansion": 8}})
    validate({"sae": {"architecture": "jumprelu", "k": 225, "expansion": 8}})


def test_matryoshka_levels_must_be_distinct_latents():
    cfg = small_cfg(architecture="matryoshka_batchtopk", matryoshka_fractions=[0.25])
    assert training_sae_config(cfg, D_IN, "cpu").matryoshka_widths == [8, 32]
    cfg = small_cfg(
        architecture="matryoshka_batchtopk", matryoshka_fractions=[0.5, 0.51]
    )
    with pytest.raises(
        ValueError, match=r"sae.matryoshka_fractions .* levels \[16, 16, 32\]"
    ):
        training_sae_config(cfg, D_IN, "cpu")
