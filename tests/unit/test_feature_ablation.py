"""Feature ablation KL: zero decoder rows, all features removed, batched = naive."""

import numpy as np
import pytest
import torch
from numerics import reorder_tol
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from test_ablation import VOCAB, depth, random_sequences, tiny_lora

from lorascope.ablation.kl import Ablation, ablation_kl
from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.causal.feature_kl import (
    SaeMap,
    feature_ablation_kl,
    naive_feature_kl,
    start_layers,
)

D_SAE = 6


def random_sae(n_components: int, zero_bias: bool = False) -> JumpReLUSAE:
    torch.manual_seed(3)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=n_components, d_sae=D_SAE))
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.normal_()
        sae.b_dec.zero_() if zero_bias else sae.b_dec.normal_()
        sae.threshold.fill_(0.01)
    return sae.double()


def tol(n_layers=3):
    return reorder_tol(torch.float64, n=VOCAB, depth=depth(n_layers), scale=1.0)


def test_zero_decoder_row_gives_zero_kl():
    model, table = tiny_lora(dtype=torch.float64)
    sae = random_sae(table.height)
    with torch.no_grad():
        sae.W_dec[2] = 0
    sae_map = SaeMap(sae, torch.float64)
    remove_GF = np.eye(D_SAE, dtype=bool)
    with ScalarControl(lora_layers(model)) as control:
        out = feature_ablation_kl(
            model, control, sae_map, table, remove_GF, random_sequences()
        )
    # the SAE is random and fires: the floor and other features are not 0
    assert (out.floor_S > 1e-6).all()
    assert out.kl_floor_GS[[0, 1, 3, 4, 5]].max() > 1e-6
    assert (out.kl_floor_GS[2] == 0).all()
    np.testing.assert_array_equal(out.kl_full_GS[2], out.floor_S)


def test_removing_every_feature_is_the_lora_with_zero_scalars():
    model, table = tiny_lora(dtype=torch.float64)
    sae = random_sae(table.height, zero_bias=True)
    sae_map = SaeMap(sae, torch.float64)
    seqs = random_sequences()
    with ScalarControl(lora_layers(model)) as control:
        out = feature_ablation_kl(
            model, control, sae_map, table, np.ones((1, D_SAE), bool), seqs
        )
        every = Ablation("group", "all", np.ones(table.height, bool), 0)
        kl_AS, _, _ = ablation_kl(model, control, [every], seqs)
    assert kl_AS.min() > 1e-3  # zeroing every scalar changes the output
    np.testing.assert_allclose(out.kl_full_GS, kl_AS, **tol())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_batched_prefix_path_equals_naive(attn):
    model, table = tiny_lora(attn=attn, dtype=torch.float64)
    sae = random_sae(table.height)
    with torch.no_grad():  # latent 1 touches only the last layer's MLP
        sae.W_dec[1] = 0
        sae.W_dec[1, table.height - 1] = 1.0
    sae_map = SaeMap(sae, torch.float64)
    starts = start_layers(np.eye(D_SAE, dtype=bool), sae_map.dir_FC, table, True)
    assert starts[1] == (2, True)
    remove_GF = np.vstack([np.eye(D_SAE, dtype=bool), np.ones((1, D_SAE), bool)])
    seqs = random_sequences()
    with ScalarControl(lora_layers(model)) as control:
        out = feature_ablation_kl(
            model, control, sae_map, table, remove_GF, seqs, variants_per_forward=3
        )
        naive_floor, naive_full = naive_feature_kl(
            model, control, sae_map, remove_GF, seqs
        )
    assert naive_full.max() > 1e-3
    np.testing.assert_allclose(out.kl_floor_GS, naive_floor, **tol())
    np.testing.assert_allclose(out.kl_full_GS, naive_full, **tol())


def test_non_affine_decoder_fails_clearly():
    _, table = tiny_lora()
    sae = random_sae(table.height).float()
    sae_map = SaeMap(sae)
    sae.decode = lambda z: torch.tanh(z @ sae.W_dec + sae.b_dec)
    with pytest.raises(ValueError, match="not affine"):
        sae_map.codes(torch.randn(5, table.height))
