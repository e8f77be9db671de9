"""Attribution patching (issue 28): exact for a model linear in the edited
activation, the gradient path against finite differences, the exact path
(prefix reuse) against naive forwards, and the target positions."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from test_ablation import random_sequences, tiny_lora
from test_feature_ablation import D_SAE, random_sae
from torch import nn

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.attribution.exact import exact_effects
from lorascope.attribution.gradients import attribute, logit_readout
from lorascope.attribution.targets import (
    TargetSequence,
    backtrack_token_ids,
    target_sequence,
)
from lorascope.causal.feature_kl import SaeMap, removed_scalars

TARGETS = ["backtrack", "answer", "loss"]


class Linear2(nn.Module):
    """Embedding, two residual linear maps, unembedding: the logits are
    linear in each LoRA scalar (and in the frozen scalars together)."""

    def __init__(self, vocab: int = 11, width: int = 6):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.l1, self.l2 = nn.Linear(width, width), nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, input_ids, logits_to_keep=0, use_cache=False, **_):
        h = self.emb(input_ids)
        h = h + self.l1(h)
        h = h + self.l2(h)
        logits = self.head(h)
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits[:, logits_to_keep]
        return SimpleNamespace(logits=logits)


def linear_lora():
    torch.manual_seed(0)
    cfg = LoraConfig(r=1, target_modules=["l1", "l2"], init_lora_weights=False)
    model = get_peft_model(Linear2(), cfg).double().eval()
    layers = [m for _, m in model.named_modules() if isinstance(m, LoraLayer)]
    return model, layers


def linear_readout(model, seq):
    """A target linear in the logits (weights fixed per position and token)."""
    pos_P = seq.positions["loss"]
    logits = model(input_ids=seq.ids_T[None], logits_to_keep=pos_P).logits
    w = torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).reshape(logits.shape)
    return {"loss": (logits * w).sum((-1, -2))}


def _seq(ids_T) -> TargetSequence:
    return TargetSequence(ids_T, {"loss": torch.arange(len(ids_T) - 1)})


def test_attribution_equals_exact_effect_for_a_linear_model():
    model, layers = linear_lora()
    seqs = [_seq(torch.tensor([1, 4, 2, 7, 3, 9])), _seq(torch.tensor([5, 0, 8]))]
    sae_map = SaeMap(random_sae(2), torch.float64)
    with ScalarControl(layers) as control:
        est = attribute(model, control, sae_map, seqs, ["loss"], readout=linear_readout)
        for s, seq in enumerate(seqs):
            with torch.no_grad():
                control.record = True
                clean = linear_readout(model, seq)["loss"]
                scalars_TC = control.recorded()[0]
                control.clear()
                for c in range(2):
                    mult_1C = torch.ones(1, 2, dtype=torch.float64)
                    mult_1C[0, c] = 0
                    control.mult_VC = mult_1C
                    exact = linear_readout(model, seq)["loss"] - clean
                    control.clear()
                    np.testing.assert_allclose(est.lora_KSC[0, s, c], exact, rtol=1e-9)
                z_TF, recon_TC = sae_map.codes(scalars_TC)
                control.set_VTC = recon_TC[None]
                floor = linear_readout(model, seq)["loss"]
                fired = 0
                for f in range(D_SAE):
                    remove_1F = np.eye(D_SAE, dtype=bool)[[f]]
                    control.set_VTC = removed_scalars(
                        recon_TC, z_TF, sae_map.dir_FC, remove_1F, [0]
                    )
                    exact = linear_readout(model, seq)["loss"] - floor
                    np.testing.assert_allclose(
                        est.sae_KSF[0, s, f], exact, rtol=1e-9, atol=1e-12
                    )
                    fired += abs(float(exact)) > 1e-6
                control.clear()
    assert fired >= 2  # the random SAE fires: the comparison is not 0 == 0
    assert np.abs(est.lora_KSC).min() > 1e-6


def _targets(ids_T) -> TargetSequence:
    """Positions standing in for the three targets on random tokens."""
    n = len(ids_T)
    return TargetSequence(
        ids_T,
        {
            "backtrack": torch.tensor([2, 5]),
            "answer": torch.arange(n - 4, n - 1),
            "loss": torch.arange(1, n - 1),
        },
    )


def test_gradient_path_matches_finite_differences():
    """Central differences in each unit's scale (1 -+ eps): the estimate of
    removing it is minus the derivative. The tiny model keeps float32
    rounding somewhere (1e-7 relative noise in the targets), hence eps 1e-3
    and atol 2e-4 against effects of 5e-4 to 3e-2."""
    model, table = tiny_lora(dtype=torch.float64)
    sae_map = SaeMap(random_sae(table.height), torch.float64)
    seq = _targets(random_sequences(1)[0][0])
    eps, close = 1e-3, dict(rtol=1e-3, atol=2e-4)
    with ScalarControl(lora_layers(model)) as control:
        est = attribute(model, control, sae_map, [seq], TARGETS)
        with torch.no_grad():
            control.record = True
            logit_readout(model, seq)
            z_TF, recon_TC = sae_map.codes(control.recorded()[0])
            control.clear()

            def central(slot, edit):
                out = {}
                for sign in (1, -1):
                    setattr(control, slot, edit(sign * eps))
                    out[sign] = logit_readout(model, seq)
                    control.clear()
                return {t: (out[1][t] - out[-1][t]).item() / (2 * eps) for t in TARGETS}

            for c in (0, 5, table.height - 1):

                def mult(d, c=c):
                    mult_1C = torch.ones(1, table.height, dtype=torch.float64)
                    mult_1C[0, c] = 1 - d
                    return mult_1C

                fd = central("mult_VC", mult)
                for k, t in enumerate(TARGETS):
                    np.testing.assert_allclose(est.lora_KSC[k, 0, c], fd[t], **close)
            fired = np.flatnonzero((z_TF != 0).any(0).numpy())
            assert len(fired) >= 2
            for f in fired:
                part_TC = z_TF[:, f, None] * sae_map.dir_FC[f]
                fd = central("set_VTC", lambda d, p=part_TC: (recon_TC - d * p)[None])
                for k, t in enumerate(TARGETS):
                    np.testing.assert_allclose(est.sae_KSF[k, 0, f], fd[t], **close)


def test_exact_path_equals_naive_forwards():
    model, table = tiny_lora(dtype=torch.float64)
    sae_map = SaeMap(random_sae(table.height), torch.float64)
    seqs = [_targets(ids) for ids, _ in random_sequences(2)]
    latents = np.arange(D_SAE)
    with ScalarControl(lora_layers(model)) as control:
        out = exact_effects(
            model, control, sae_map, table, seqs, TARGETS, latents,
            variants_per_forward=3,
        )  # fmt: skip
        with torch.no_grad():
            for s, seq in enumerate(seqs):
                control.record = True
                clean = logit_readout(model, seq)
                scalars_TC = control.recorded()[0]
                control.clear()
                for c in (0, 3, table.height - 1):
                    mult = torch.ones(1, table.height, dtype=torch.float64)
                    mult[0, c] = 0
                    control.mult_VC = mult
                    got = logit_readout(model, seq)
                    control.clear()
                    for k, t in enumerate(TARGETS):
                        want = (got[t] - clean[t]).item()
                        np.testing.assert_allclose(
                            out.lora_KSC[k, s, c], want, atol=1e-9
                        )
                z_TF, recon_TC = sae_map.codes(scalars_TC)
                control.set_VTC = recon_TC[None]
                floor = logit_readout(model, seq)
                for f in latents:
                    control.set_VTC = removed_scalars(
                        recon_TC, z_TF, sae_map.dir_FC, np.eye(D_SAE, dtype=bool), [f]
                    )
                    got = logit_readout(model, seq)
                    for k, t in enumerate(TARGETS):
                        want = (got[t] - floor[t]).item()
                        np.testing.assert_allclose(
                            out.sae_KSF[k, s, f], want, atol=1e-9
                        )
                control.clear()
    assert np.abs(out.lora_KSC).max() > 1e-4


@pytest.fixture(scope="module")
def toy_tokenizer():
    from transformers import AutoTokenizer

    from lorascope.core.checks import SHIPPED_TOY_MODEL

    return AutoTokenizer.from_pretrained(SHIPPED_TOY_MODEL)


def test_target_positions_on_an_s1_row(toy_tokenizer):
    from lorascope.core.chat import build_example

    tok = toy_tokenizer
    ex = build_example(tok, "12+34?", "1+3=4. Wait, 2+4=6.", "46")
    ids_T, labels_T = torch.tensor(ex.input_ids), torch.tensor(ex.labels)
    bt = backtrack_token_ids(tok, ["Wait", "Hmm"])
    marker = tok.convert_tokens_to_ids("<|im_start|>")
    seq = target_sequence(
        ids_T, labels_T, TARGETS, bt, marker_id=marker,
        special_ids=tok.all_special_ids, decode=tok.decode,
    )  # fmt: skip
    nxt = lambda t: tok.decode(ids_T[seq.positions[t] + 1])  # noqa: E731
    assert nxt("backtrack") == "Wait"
    assert nxt("answer").strip() == "46"
    assert len(seq.positions["loss"]) == int((labels_T[1:] != -100).sum())


def test_a_backtrack_word_that_is_not_one_token_fails_naming_it(toy_tokenizer):
    with pytest.raises(
        ValueError, match=r"attribution.backtrack_tokens: 'Alternatively'"
    ):
        backtrack_token_ids(toy_tokenizer, ["Wait", "Alternatively"])


def test_layer_checkpointing_gives_the_same_attribution():
    model, table = tiny_lora(dtype=torch.float64)
    sae_map = SaeMap(random_sae(table.height), torch.float64)
    seqs = [_targets(random_sequences(1)[0][0])]
    with ScalarControl(lora_layers(model)) as control:
        plain = attribute(model, control, sae_map, seqs, TARGETS)
        ckpt = attribute(model, control, sae_map, seqs, TARGETS, checkpoint_layers=True)
    assert np.abs(plain.lora_KSC).max() > 1e-4
    np.testing.assert_allclose(ckpt.lora_KSC, plain.lora_KSC, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ckpt.sae_KSF, plain.sae_KSF, rtol=1e-9, atol=1e-12)
    assert "forward" not in vars(model.get_base_model().get_decoder().layers[0])


def test_integrated_gradients_equal_first_order_where_the_target_is_linear():
    """The frozen scalars enter the linear model's logits linearly, so the
    gradient is the same at every point of the path: IG = attribution
    patching for SAE latents; the LoRA path (scalars feeding later scalars)
    is not linear in the joint scale, so there they differ."""
    model, layers = linear_lora()
    seqs = [_seq(torch.tensor([1, 4, 2, 7, 3, 9]))]
    sae_map = SaeMap(random_sae(2), torch.float64)
    with ScalarControl(layers) as control:
        one = attribute(model, control, sae_map, seqs, ["loss"], readout=linear_readout)
        ig = attribute(
            model, control, sae_map, seqs, ["loss"], readout=linear_readout, ig_steps=3
        )
    np.testing.assert_allclose(ig.sae_KSF, one.sae_KSF, rtol=1e-9, atol=1e-12)
    assert np.abs(one.sae_KSF).max() > 1e-6
    assert not np.allclose(ig.lora_KSC, one.lora_KSC)
    np.testing.assert_allclose(ig.frac_active_F, one.frac_active_F)


def test_tables_support_sign_ranks_and_validation_verdict():
    import polars as pl

    from lorascope.attribution.gradients import Attribution
    from lorascope.attribution.tables import (
        attribution_table,
        bootstrap_mean,
        validation_table,
    )

    x_SU = np.array([[1.0, 2.0], [3.0, 2.0]])
    mean, lo, hi = bootstrap_mean(x_SU, 500, 0)
    np.testing.assert_allclose(mean, [2.0, 2.0])
    assert lo[0] < 2.0 < hi[0] and lo[1] == hi[1] == 2.0  # no spread, no width
    att = Attribution(
        ["backtrack", "loss"],
        lora_KSC=np.array([[[-1.0, 2.0]], [[0.5, -0.5]]]),
        sae_KSF=np.array([[[0.0, -3.0, 1.0]], [[1.0, 0.0, 0.0]]]),
        positions_KS=np.array([[2], [9]]),
        frac_active_F=np.array([0.5, 0.2, 0.0]),
        mean_code_F=np.zeros(3),
    )
    lora = pl.DataFrame({"feature": [0, 1, 2], "label": ["a+", "a-", "b+"],
                         "component": [0, 0, 1], "layer": [0, 0, 0],
                         "module": ["q", "q", "k"],
                         "frac_active": [0.4, 0.6, 1.0]})  # fmt: skip
    sae = pl.DataFrame({"feature": [0, 1], "label": ["s0", "s1"], "latent": [1, 2]})
    df = attribution_table(lora, sae, att, n_boot=50, seed=0)
    assert df.height == (3 + 2) * 2
    top = df.filter((pl.col("target") == "backtrack") & (pl.col("rank") == 1))
    # removing latent 1 lowers the backtrack log-prob most: it supports it
    assert top.filter(pl.col("kind") == "sae")["latent"].to_list() == [1]
    loss = df.filter((pl.col("target") == "loss") & (pl.col("kind") == "lora"))
    assert loss.filter(pl.col("component") == 0)["support"].to_list() == [0.5, 0.5]
    pairs = pl.DataFrame({
        "kind": ["sae"] * 12, "unit": list(range(12)), "target": ["loss"] * 12,
        "estimate": [float(i) for i in range(10)] + [0.0, 0.0],
        "exact": [float(i) + 0.1 for i in range(10)] + [0.0, 0.0],
        "n_sequences": [2] * 12,
    })  # fmt: skip
    val = validation_table(pairs, n_boot=100, seed=0, trust_rho=0.7)
    row = val.row(0, named=True)
    assert row["n_units"] == 10  # units at 0 in both are left out
    assert row["rho"] == pytest.approx(1.0) and row["trustworthy"]
    shuffled = pairs.with_columns(exact=pl.Series([3.0, -1, 7, 0.5, -4, 2, 9, -2, 1, 5,
                                                   0, 0]))  # fmt: skip
    assert not validation_table(shuffled, n_boot=100, seed=0, trust_rho=0.7)[
        "trustworthy"
    ][0]


def test_validation_prefers_sequences_with_every_target():
    from lorascope.attribution.gradients import Attribution
    from lorascope.attribution.tables import validation_sequences

    positions_KS = np.array([[0, 0, 3, 1], [2, 0, 2, 0], [9, 9, 9, 9]])
    zero = np.zeros((3, 4, 1))
    att = Attribution(["backtrack", "answer", "loss"], zero, zero, positions_KS,
                      np.zeros(1), np.zeros(1))  # fmt: skip
    assert validation_sequences(att, 2).tolist() == [2, 0]
    assert validation_sequences(att, 4).tolist() == [2, 0, 3, 1]
