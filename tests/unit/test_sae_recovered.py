"""KL and loss recovered by the SAE reconstruction (ablation/sae_recovered.json):
exact reconstruction = 1, all-zero reconstruction = 0, losses and the zero
run against plain forwards, undefined fractions named."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numerics import reorder_tol
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from test_ablation import VOCAB, depth, random_sequences, tiny_lora

from lorascope.ablation.kl import Ablation, ablation_kl
from lorascope.ablation.scalar_control import ScalarControl, lora_layers, zeroed_lora_b
from lorascope.causal.feature_effects import sae_recovered
from lorascope.causal.feature_kl import (
    FeatureKL,
    ReplacementLoss,
    SaeMap,
    feature_ablation_kl,
)


def tol():
    return reorder_tol(torch.float64, n=VOCAB, depth=depth(3), scale=1.0)


def sae_of(n_components: int, kind: str) -> JumpReLUSAE:
    """exact: codes relu(s), relu(-s), decoded as relu(s) - relu(-s) = s.
    zero: a random encoder that fires, decoded to all zeros."""
    torch.manual_seed(5)
    d_sae = 2 * n_components
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=n_components, d_sae=d_sae))
    eye = torch.eye(n_components)
    with torch.no_grad():
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold.zero_()
        if kind == "exact":
            sae.W_enc.copy_(torch.cat([eye, -eye], 1))
            sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        else:
            sae.W_enc.normal_()
            sae.W_dec.zero_()
    return sae.to(torch.float64)  # .double() would leave SAELens encoding in float32


def loss_scopes(seqs):
    """Loss positions unlike the KL scope (the first two positions left out)."""
    out = []
    for _, scope_T in seqs:
        loss_T = scope_T.clone()
        loss_T[:2] = False
        out.append(loss_T)
    return out


def run(kind: str, **kw) -> FeatureKL:
    model, table = tiny_lora(dtype=torch.float64)
    sae_map = SaeMap(sae_of(table.height, kind), torch.float64)
    seqs = random_sequences()
    remove_GF = np.eye(sae_map.dir_FC.shape[0], dtype=bool)[:2]
    with ScalarControl(lora_layers(model)) as control:
        return feature_ablation_kl(
            model, control, sae_map, table, remove_GF, seqs,
            loss_scopes=loss_scopes(seqs), **kw,
        )  # fmt: skip


@pytest.mark.parametrize("average", ["tokens", "sequences"])
def test_exact_reconstruction_recovers_everything(average):
    got = sae_recovered(run("exact"), average)
    # zeroing the scalars matters, so the fractions are not 0/0
    assert got["kl_full_zero"] > 1e-3
    assert abs(got["loss_zero"] - got["loss_full"]) > 1e-3
    assert got["kl_full_recon"] == pytest.approx(0, abs=1e-12)
    assert got["kl_recovered"] == pytest.approx(1.0, abs=1e-9)
    assert got["loss_recovered"] == pytest.approx(1.0, abs=1e-9)
    assert got["undefined"] == {}


def test_zero_reconstruction_recovers_nothing():
    got = sae_recovered(run("zero", logit_chunk=5), "tokens")
    assert got["kl_full_zero"] > 1e-3
    assert got["kl_full_recon"] == pytest.approx(got["kl_full_zero"], rel=1e-9)
    assert got["kl_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert got["loss_recovered"] == pytest.approx(0.0, abs=1e-9)
    assert got["n_loss_tokens"] == got["n_kl_tokens"] - 2 * got["n_sequences"]


def test_zero_run_and_losses_match_plain_forwards():
    """Chunked zero run (chunk 5: boundaries inside the sequence) against
    whole-sequence forwards: the full LoRA's and the LoRA with every lora_B
    zeroed; KL against the all-components ablation of `ablation_kl`."""
    model, table = tiny_lora(dtype=torch.float64)
    seqs = random_sequences()
    out = run("exact", logit_chunk=5)
    layers = lora_layers(model)
    with ScalarControl(layers) as control:
        every = Ablation("group", "all", np.ones(table.height, bool), 0)
        kl_AS, _, _ = ablation_kl(model, control, [every], seqs)
    np.testing.assert_allclose(out.replacement.kl_zero_S, kl_AS[0], **tol())
    for s, ((ids_T, _), loss_T) in enumerate(zip(seqs, loss_scopes(seqs), strict=True)):
        with torch.no_grad():
            full = model(input_ids=ids_T[None]).logits[0]
            with zeroed_lora_b(layers, torch.ones(table.height, dtype=torch.bool)):
                zero = model(input_ids=ids_T[None]).logits[0]
        for logits, got in ((full, out.replacement.loss_full_S),
                            (zero, out.replacement.loss_zero_S)):  # fmt: skip
            nll_T = F.cross_entropy(logits[:-1], ids_T[1:], reduction="none")
            want = float(nll_T[loss_T[:-1]].mean())
            np.testing.assert_allclose(got[s], want, **tol())
        assert out.replacement.loss_tokens_S[s] == int(loss_T[:-1].sum())
    # the exact reconstruction's loss is the full LoRA's
    np.testing.assert_allclose(
        out.replacement.loss_floor_S, out.replacement.loss_full_S, **tol()
    )


def synthetic(kl_zero_S, loss_zero_S) -> FeatureKL:
    return FeatureKL(
        kl_floor_GS=np.zeros((1, 2)),
        kl_full_GS=np.zeros((1, 2)),
        floor_S=np.array([0.1, 0.4]),
        tokens_S=np.array([10, 30]),
        mean_code_F=np.zeros(1),
        frac_active_F=np.zeros(1),
        replacement=ReplacementLoss(
            kl_zero_S=np.asarray(kl_zero_S, float),
            loss_full_S=np.array([1.0, 2.0]),
            loss_floor_S=np.array([1.5, 2.0]),
            loss_zero_S=np.asarray(loss_zero_S, float),
            loss_tokens_S=np.array([5, 15]),
        ),
    )


def test_fractions_by_hand_for_both_averages():
    out = synthetic([1.0, 2.0], [3.0, 4.0])
    got = sae_recovered(out, "tokens")
    # pooled: KL recon (1 + 12) / 40, zero (10 + 60) / 40; losses over 20 tokens
    assert got["kl_recovered"] == pytest.approx(1 - 13 / 70)
    full, recon, zero = (5 + 30) / 20, (7.5 + 30) / 20, (15 + 60) / 20
    assert got["loss_recovered"] == pytest.approx((zero - recon) / (zero - full))
    got = sae_recovered(out, "sequences")
    assert got["kl_recovered"] == pytest.approx(1 - 0.25 / 1.5)
    assert got["loss_recovered"] == pytest.approx((3.5 - 1.75) / (3.5 - 1.5))


def test_lora_that_does_nothing_leaves_the_fractions_undefined():
    got = sae_recovered(synthetic([0.0, 0.0], [1.0, 2.0]), "tokens")
    assert got["kl_recovered"] is None and got["loss_recovered"] is None
    assert "zeroing the scalars changes nothing" in got["undefined"]["kl_recovered"]
    assert "loss unchanged" in got["undefined"]["loss_recovered"]
    assert got["kl_full_recon"] == pytest.approx(13 / 40)  # the rest is still there


def test_without_a_zero_run_fails_clearly():
    out = synthetic([1.0, 1.0], [1.0, 1.0])
    out.replacement = None
    with pytest.raises(ValueError, match="without its zero run"):
        sae_recovered(out, "tokens")


def test_loss_scopes_of_the_wrong_length_fail_clearly():
    model, table = tiny_lora(dtype=torch.float64)
    sae_map = SaeMap(sae_of(table.height, "exact"), torch.float64)
    seqs = random_sequences()
    remove_GF = np.eye(2, sae_map.dir_FC.shape[0], dtype=bool)
    short = [torch.ones(3, dtype=torch.bool)] * len(seqs)
    with (
        ScalarControl(lora_layers(model)) as control,
        pytest.raises(ValueError, match="loss_scopes"),
    ):
        feature_ablation_kl(
            model, control, sae_map, table, remove_GF, seqs, loss_scopes=short
        )
