"""Feature ablation during generation: the two-pass decoder hook equals a naive
greedy loop, component variants equal zeroed lora_B, and the table's intervals."""

import numpy as np
import polars as pl
import pytest
import torch
from test_ablation import random_sequences, tiny_lora
from test_feature_ablation import D_SAE, random_sae

from lorascope.ablation.scalar_control import ScalarControl, lora_layers, zeroed_lora_b
from lorascope.causal.feature_accuracy import (
    CleanScalars,
    Variant,
    accuracy_table,
    choose_variants,
    sae_edit,
)
from lorascope.causal.feature_kl import SaeMap

NEW = 6


def _generate(model, ids_BT, mask_BT):
    out = model.generate(
        input_ids=ids_BT,
        attention_mask=mask_BT,
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        do_sample=False,
        pad_token_id=0,
    )
    return out[:, ids_BT.shape[1] :]


def _prompts():
    """Two left-padded prompts of different lengths (padding is exercised)."""
    seqs = [ids for ids, _ in random_sequences(2, length=9)]
    width = max(len(s) for s in seqs)
    ids_BT = torch.zeros(len(seqs), width, dtype=torch.long)
    mask_BT = torch.zeros_like(ids_BT)
    for b, s in enumerate(seqs):
        ids_BT[b, width - len(s) :] = s
        mask_BT[b, width - len(s) :] = 1
    return seqs, ids_BT, mask_BT


@torch.no_grad()
def _naive_greedy(model, control, edit, ids_T):
    """No cache, one sequence: each step recomputes the unedited scalars of the
    whole prefix, edits them and runs the whole prefix edited."""
    ids_1T = ids_T[None]
    for _ in range(NEW):
        control.clear()
        control.record = True
        model(input_ids=ids_1T)
        scalars_1TC = control.recorded()
        control.clear()
        control.set_VTC = edit(scalars_1TC)
        logits = model(input_ids=ids_1T).logits
        control.clear()
        ids_1T = torch.cat([ids_1T, logits[:, -1:].argmax(-1)], dim=1)
    return ids_1T[0, len(ids_T) :]


@pytest.mark.parametrize("latent", [None, 1])
def test_two_pass_generation_equals_naive_loop(latent):
    model, table = tiny_lora(dtype=torch.float64)
    sae_map = SaeMap(random_sae(table.height), torch.float64)
    seqs, ids_BT, mask_BT = _prompts()
    edit = sae_edit(sae_map, latent)
    with ScalarControl(lora_layers(model)) as control:
        with CleanScalars(model, control, edit):
            got_BN = _generate(model, ids_BT, mask_BT)
        plain_BN = _generate(model, ids_BT, mask_BT)
        want = [_naive_greedy(model, control, edit, s) for s in seqs]
    for b in range(len(seqs)):
        assert got_BN[b].tolist() == want[b].tolist()
    # the edit changes what is generated (the test could fail)
    assert not torch.equal(got_BN, plain_BN)


def test_identity_edit_generates_as_the_unedited_lora():
    model, _ = tiny_lora()
    _, ids_BT, mask_BT = _prompts()
    with ScalarControl(lora_layers(model)) as control:
        plain_BN = _generate(model, ids_BT, mask_BT)
        with CleanScalars(model, control, lambda s: s.clone()):
            edited_BN = _generate(model, ids_BT, mask_BT)
        # the hook is gone after the context: a later generate is plain again
        assert torch.equal(_generate(model, ids_BT, mask_BT), plain_BN)
    assert torch.equal(edited_BN, plain_BN)


def test_component_mask_generation_equals_zeroed_lora_b():
    model, table = tiny_lora(dtype=torch.float64)
    _, ids_BT, mask_BT = _prompts()
    layers = lora_layers(model)
    ablate_C = table["index"].to_numpy() == 4
    with ScalarControl(layers) as control:
        control.mult_VC = torch.from_numpy(~ablate_C).double()[None]
        hooked_BN = _generate(model, ids_BT, mask_BT)
        control.clear()
        plain_BN = _generate(model, ids_BT, mask_BT)
    with zeroed_lora_b(layers, torch.from_numpy(ablate_C)):
        want_BN = _generate(model, ids_BT, mask_BT)
    assert torch.equal(hooked_BN, want_BN)
    assert not torch.equal(hooked_BN, plain_BN)


def test_choose_variants_takes_firing_features_and_components_by_kl():
    feature_kl = pl.DataFrame(
        {
            "kind": ["sae"] * 4 + ["lora"],
            "feature": [0, 1, 2, 3, 0],
            "label": [None, "b", "c", "d", "e"],
            "latent": [0, 1, 2, 3, None],
            "kl_mean": [0.5, 0.9, 0.1, 2.0, 9.0],
            "frac_active": [0.1, 0.2, 0.3, 0.0, 0.5],
        }
    )
    kl_components = pl.DataFrame(
        {
            "index": [0, 1, 2],
            "name": ["a", "b", "c"],
            "rank_slot": [0, 0, 0],
            "kl_mean": [0.1, 0.3, 0.2],
        }
    )
    got = choose_variants(feature_kl, kl_components, top_n=2)
    assert [v.name for v in got] == [
        "full", "floor", "sae:1", "sae:0", "component:1", "component:2",
    ]  # fmt: skip
    assert [v.reference for v in got] == ["full", "full", "floor", "floor"] + [
        "full"
    ] * 2
    assert got[3].label == "latent 0"  # unlabelled: named by its latent
    assert [got[0].label] + [v.label for v in got[4:]] == ["rank-1 LoRA", "b", "c"]
    # rank 2: the reference says its rank, a component which direction it is
    rank2 = kl_components.with_columns(
        name=pl.Series(["a", "a", "b"]), rank_slot=pl.Series([0, 1, 0])
    )
    got = choose_variants(feature_kl, rank2, top_n=2)
    assert [got[0].label] + [v.label for v in got[4:]] == [
        "rank-2 LoRA", "a#1", "b#0",
    ]  # fmt: skip


def test_accuracy_table_intervals_and_deltas():
    variants = [
        Variant("reference", "full", "LoRA", "full"),
        Variant("component", "3", "c3", "full", component=3, kl_mean=0.2),
    ]
    rng = np.random.default_rng(0)
    full = rng.random(40) < 0.8
    ablated = full & (rng.random(40) < 0.5)
    stats = {n: {"backtrack_count": 0} for n in ("full", "component:3")}
    t = accuracy_table(
        variants, {"full": full, "component:3": ablated}, stats, "b", n_boot=500
    )
    assert t["accuracy"].to_list() == [full.mean(), ablated.mean()]
    assert t["delta"][0] == 0 and t["delta_lo"][0] == 0 and t["delta_hi"][0] == 0
    assert t["delta"][1] == ablated.mean() - full.mean() < 0
    # the ablation only removes correct answers: every paired resample agrees
    assert t["delta_hi"][1] <= 0
    for col in ("accuracy", "delta"):
        assert (t[f"{col}_lo"] <= t[col]).all() and (t[col] <= t[f"{col}_hi"]).all()
    assert t["component"].to_list() == [None, 3]


def test_sae_edit_removes_exactly_the_latents_contribution():
    sae_map = SaeMap(random_sae(8), torch.float64)
    scalars = torch.randn(2, 3, 8, dtype=torch.float64)
    z_NF, recon_NC = sae_map.codes(scalars.reshape(6, 8))
    floor = sae_edit(sae_map, None)(scalars)
    assert torch.equal(floor, recon_NC.reshape(2, 3, 8))
    for latent in range(D_SAE):
        removed = sae_edit(sae_map, latent)(scalars)
        want = recon_NC - z_NF[:, latent, None] * sae_map.dir_FC[latent]
        assert torch.equal(removed, want.reshape(2, 3, 8))
