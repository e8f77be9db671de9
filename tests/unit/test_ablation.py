"""KL ablation: mask hooks vs weight zeroing, prefix reuse vs full recompute."""

import numpy as np
import polars as pl
import pytest
import torch
from numerics import reorder_tol
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM

from lorascope.ablation.kl import (
    Ablation,
    ablation_kl,
    build_ablations,
    naive_ablation_kl,
)
from lorascope.ablation.scalar_control import (
    ScalarControl,
    check_table,
    lora_layers,
    zeroed_lora_b,
)
from lorascope.ablation.setup import select_sequences, summarise
from lorascope.core.components import lora_modules, table_from_modules

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# Tiny dims: the longest reduction is the vocabulary (61); a forward chains
# about 8 reductions per layer.
VOCAB, WIDTH = 61, 16


def depth(n_layers: int) -> int:
    return 8 * n_layers + 2


def tiny_lora(
    attn: str = "sdpa", rank: int = 1, n_layers: int = 3, dtype=torch.float32
):
    """A tiny Qwen2 + LoRA. Tests comparing two computation paths (batched vs
    one row, hooks vs zeroed weights, prefix reuse vs full pass) use float64,
    so their tolerance (tests/support/numerics.py) holds on every CPU."""
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=61,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        attn_implementation=attn,
    )
    base = Qwen2ForCausalLM(cfg).eval()
    # init_lora_weights=False: random lora_B too, so every component matters.
    lora = LoraConfig(
        r=rank,
        lora_alpha=16,
        use_rslora=True,
        target_modules=TARGETS,
        init_lora_weights=False,
    )
    model = get_peft_model(base, lora).eval().to(dtype)
    table = table_from_modules([m for m, _ in lora_modules(model)])
    return model, table


def random_sequences(n: int = 2, length: int = 12, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    seqs = []
    for i in range(n):
        ids_T = torch.randint(0, 61, (length - i,), generator=gen)
        scope_T = torch.ones(len(ids_T), dtype=torch.bool)
        scope_T[-1] = False
        seqs.append((ids_T, scope_T))
    return seqs


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_batched_mask_equals_zeroed_lora_b(attn):
    model, table = tiny_lora(attn, rank=2, dtype=torch.float64)
    layers = lora_layers(model)
    ids_1T = random_sequences(1)[0][0][None]
    masks_VC = np.stack(
        [
            table["group"].to_numpy() == "mlp",
            table["index"].to_numpy() == 3,
            table["rank_slot"].to_numpy() == 1,
        ]
    )
    with torch.no_grad(), ScalarControl(layers) as control:
        control.mult_VC = torch.from_numpy(~masks_VC).double()
        hooked = model(input_ids=ids_1T.expand(len(masks_VC), -1)).logits
        control.clear()
        tol = reorder_tol(
            torch.float64, n=VOCAB, depth=depth(3), scale=hooked.abs().max()
        )
        for v, mask_C in enumerate(masks_VC):
            with zeroed_lora_b(layers, torch.from_numpy(mask_C)):
                zeroed = model(input_ids=ids_1T).logits[0]
            torch.testing.assert_close(hooked[v], zeroed, **tol)
        # Ablating changes the output (far beyond the tolerance) ...
        full = model(input_ids=ids_1T).logits[0]
        assert (full - hooked[0]).abs().max() > 1e6 * tol["atol"]
        # ... and the weights come back afterwards: the very same computation
        # again, so bitwise equal.
        assert torch.equal(full, model(input_ids=ids_1T).logits[0])


def test_recorded_scalars_are_input_times_lora_a():
    model, _ = tiny_lora(dtype=torch.float64)
    layers = lora_layers(model)
    ids_1T = random_sequences(1)[0][0][None]
    decoder = model.get_base_model().model
    with torch.no_grad(), ScalarControl(layers) as control:
        control.record = True
        model(input_ids=ids_1T)
        scalars_TC = control.recorded()[0]
        x_TD = decoder.layers[0].input_layernorm(decoder.embed_tokens(ids_1T))[0]
        q_weight = layers[0].lora_A["default"].weight  # layer 0 q, rank 1
    want_T = x_TD @ q_weight[0]
    tol = reorder_tol(torch.float64, n=WIDTH, depth=2, scale=want_T.abs().max())
    torch.testing.assert_close(scalars_TC[:, 0], want_T, **tol)


def definition_kl(model, table, ablations, sequences) -> np.ndarray:
    """KL(full || ablated) per ablation and sequence from the definition,
    sharing no code with lorascope.ablation: each ablation is a copy of the
    model with its components' lora_B columns zeroed by layer/module/slot;
    KL = sum_x p(x) (log p(x) - log q(x)) in float64 with each log_softmax
    taken on its own, averaged over the scored tokens (issue 33, item 15)."""
    import copy

    out = np.zeros((len(ablations), len(sequences)))
    for a, ablation in enumerate(ablations):
        ablated = copy.deepcopy(model)
        blocks = ablated.get_base_model().model.layers
        rows = table.filter(pl.Series(ablation.mask_C.astype(bool)))
        for row in rows.iter_rows(named=True):
            block = blocks[row["layer"]]
            parent = block.self_attn if row["group"] == "attn" else block.mlp
            lora_b = getattr(parent, f"{row['module']}_proj").lora_B["default"]
            with torch.no_grad():
                lora_b.weight[:, row["rank_slot"]] = 0
        for s, (ids_T, scope_T) in enumerate(sequences):
            with torch.no_grad():
                p_TX = model(input_ids=ids_T[None]).logits[0].double()
                q_TX = ablated(input_ids=ids_T[None]).logits[0].double()
            logp_TX = torch.log_softmax(p_TX, dim=-1)
            logq_TX = torch.log_softmax(q_TX, dim=-1)
            kl_T = (logp_TX.exp() * (logp_TX - logq_TX)).sum(dim=-1)
            w_T = scope_T.double()
            out[a, s] = float((kl_T * w_T).sum() / w_T.sum())
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_prefix_reuse_equals_full_recompute_and_naive(attn):
    model, table = tiny_lora(attn, dtype=torch.float64)
    layers = lora_layers(model)
    ablations = build_ablations(table)
    assert len(ablations) == 3 + 21 + 2
    # gate/up/down and the MLP group rerun from after their layer's attention.
    assert sum(a.mlp_start for a in ablations) == 3 * 3 + 1
    seqs = random_sequences()
    with ScalarControl(layers) as control:
        fast_AS, tokens_S, abs_C = ablation_kl(
            model, control, ablations, seqs, variants_per_forward=3, logit_chunk=5
        )
        full_AS, _, _ = ablation_kl(model, control, ablations, seqs, prefix_reuse=False)
    naive_AS = naive_ablation_kl(model, layers, ablations, seqs)
    reference_AS = definition_kl(model, table, ablations, seqs)
    # KL sums over the vocabulary on top of the forward.
    tol = reorder_tol(torch.float64, n=VOCAB, depth=depth(3) + 2, scale=fast_AS.max())
    torch.testing.assert_close(fast_AS, full_AS, **tol)
    torch.testing.assert_close(fast_AS, naive_AS, **tol)
    torch.testing.assert_close(fast_AS, reference_AS, **tol)
    assert (fast_AS > 0).all() and list(tokens_S) == [11, 10]
    assert abs_C.shape == (21,) and (abs_C > 0).all()


def test_rank2_ablates_each_direction_and_each_whole_module():
    """Issue 30: at rank r > 1 the KL ablation measures every direction (a
    component row) and every module (all r directions at once), each equal
    to the definition (lora_B columns zeroed by layer/module/slot)."""
    model, table = tiny_lora(rank=2, n_layers=2, dtype=torch.float64)
    ablations = build_ablations(table)
    kinds = [a.kind for a in ablations]
    assert kinds == ["layer"] * 2 + ["component"] * 28 + ["group"] * 2 + ["module"] * 14
    modules = [a for a in ablations if a.kind == "module"]
    assert [a.key for a in modules[:3]] == ["0.q", "0.k", "0.v"]
    for a in modules:  # both directions of its module, nothing else
        layer, module = a.key.split(".")
        want_C = (table["layer"].to_numpy() == int(layer)) & (
            table["module"].to_numpy() == module
        )
        assert (a.mask_C == want_C).all() and a.mask_C.sum() == 2
    picked = [ablations[2], ablations[3], modules[0], modules[-1]]
    seqs = random_sequences(1)
    with ScalarControl(lora_layers(model)) as control:
        kl_AS, _, _ = ablation_kl(
            model, control, picked, seqs, variants_per_forward=3, logit_chunk=5
        )
    reference_AS = definition_kl(model, table, picked, seqs)
    tol = reorder_tol(torch.float64, n=VOCAB, depth=depth(2) + 2, scale=kl_AS.max())
    torch.testing.assert_close(kl_AS, reference_AS, **tol)
    # the module (q of layer 0) is not either of its directions
    assert abs(kl_AS[2] - kl_AS[0]).min() > 1e3 * tol["atol"]
    assert abs(kl_AS[2] - kl_AS[1]).min() > 1e3 * tol["atol"]


def test_kl_zero_when_nothing_ablated_and_never_negative():
    model, table = tiny_lora(dtype=torch.float64)
    none_C = np.zeros(table.height, dtype=bool)
    ablations = [Ablation("none", "0", none_C, 0), Ablation("none", "2", none_C, 2)]
    ablations += build_ablations(table)
    with ScalarControl(lora_layers(model)) as control:
        kl_AS, _, _ = ablation_kl(model, control, ablations, random_sequences())
    # Nothing ablated: the two passes differ only in summation order, so the
    # log-probs differ by d ~ tol and KL(p || q) ~ d^2 / 2 (it is quadratic).
    tol = reorder_tol(torch.float64, n=VOCAB, depth=depth(3) + 2)["rtol"]
    np.testing.assert_allclose(kl_AS[:2], 0.0, atol=tol)
    assert kl_AS[2:].min() > 1e3 * tol
    assert (kl_AS >= 0).all()


def test_zeroed_lora_b_rejects_bad_mask_and_touches_nothing():
    model, _ = tiny_lora()
    layers = lora_layers(model)
    before = layers[0].lora_B["default"].weight.clone()
    with pytest.raises(ValueError, match="mask has 5 entries for 21 components"):
        with zeroed_lora_b(layers, torch.ones(5, dtype=torch.bool)):
            pass
    torch.testing.assert_close(layers[0].lora_B["default"].weight, before)


def test_select_sequences_scope_seed_and_clear_errors():
    sft = pl.DataFrame(
        {
            "input_ids": [[1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11, 12]],
            "labels": [[-100, -100, 3, 4, 5], [-100, 7, 8], [-100] * 4],
        }
    )
    seqs = select_sequences(sft, 2, 4, seed=0, scope="assistant")
    again = select_sequences(sft, 2, 4, seed=0, scope="assistant")
    assert [s[0].tolist() for s in seqs] == [s[0].tolist() for s in again]
    by_first = {int(ids[0]): scope.tolist() for ids, scope in seqs}
    expected = {1: [False, True, True, False], 6: [True, True, False]}
    expected[9] = [False] * 4
    assert all(by_first[k] == expected[k] for k in by_first)
    assert select_sequences(sft, 1, 3, 0, "all")[0][1].tolist() == [True, True, False]
    with pytest.raises(ValueError, match="ablation.n_sequences: 4 requested.*3 rows"):
        select_sequences(sft, 4, 4, 0, "all")
    with pytest.raises(ValueError, match="ablation.token_scope"):
        select_sequences(sft, 1, 4, 0, "loss")


def test_summarise_tables():
    model, table = tiny_lora()
    ablations = build_ablations(table)
    kl_AS = np.arange(len(ablations) * 2, dtype=float).reshape(-1, 2)
    tokens_S = np.array([1, 3])
    out = summarise(table, ablations, kl_AS, tokens_S, np.ones(table.height))
    assert out["layers"]["layer"].to_list() == [0, 1, 2]
    assert out["groups"]["group"].to_list() == ["attn", "mlp"]
    comps = out["components"]
    assert comps["index"].to_list() == list(range(21))
    # Token-weighted mean over sequences: (kl_0 * 1 + kl_1 * 3) / 4.
    row = kl_AS[3 + 5]
    assert comps["kl_mean"][5] == pytest.approx((row[0] + 3 * row[1]) / 4)
    assert comps["kl_seq_std"][5] == pytest.approx(np.std(row, ddof=1))
    assert out["layers"]["n_ablated"].to_list() == [7, 7, 7]
    # ablation.average sequences: the plain mean of the per-sequence means.
    seq = summarise(table, ablations, kl_AS, tokens_S, np.ones(21), "sequences")
    assert seq["components"]["kl_mean"][5] == pytest.approx(row.mean())
    assert seq["components"]["kl_token_mean"][5] == comps["kl_mean"][5]
    assert comps["kl_sequence_mean"][5] == pytest.approx(row.mean())
    with pytest.raises(ValueError, match="ablation.average"):
        summarise(table, ablations, kl_AS, tokens_S, np.ones(21), "median")


def test_summarise_rank2_gives_each_direction_its_module_kl():
    model, table = tiny_lora(rank=2, n_layers=2)
    ablations = build_ablations(table)
    kl_AS = np.arange(len(ablations) * 2, dtype=float).reshape(-1, 2)
    tokens_S = np.array([1, 3])
    comps = summarise(table, ablations, kl_AS, tokens_S, np.ones(28))["components"]
    assert comps["index"].to_list() == list(range(28))
    assert comps["rank_slot"].to_list()[:4] == [0, 1, 0, 1]
    # row 5 = layer 0, v, direction 1; its own KL and its module's (0.v)
    own = kl_AS[2 + 5]
    module = kl_AS[[a.key for a in ablations].index("0.v")]
    assert ablations[[a.key for a in ablations].index("0.v")].kind == "module"
    assert comps["kl_mean"][5] == pytest.approx((own[0] + 3 * own[1]) / 4)
    for row in (4, 5):  # both directions of 0.v carry the module's KL
        assert comps["module_kl_mean"][row] == pytest.approx(
            (module[0] + 3 * module[1]) / 4
        )
        assert comps["module_kl_seq_std"][row] == pytest.approx(np.std(module, ddof=1))
        assert comps["module_kl_seq_sem"][row] == pytest.approx(
            np.std(module, ddof=1) / np.sqrt(2)
        )
    assert comps["module_kl_mean"].null_count() == 0
    # rank 1: a module is its one component; the table keeps its columns
    model1, table1 = tiny_lora()
    abl1 = build_ablations(table1)
    one = summarise(table1, abl1, np.ones((len(abl1), 2)), tokens_S, np.ones(21))
    assert not any(c.startswith("module_") for c in one["components"].columns)


def test_legacy_draw_reproduces_numpy_global_seeded_choice():
    """ablation.draw_rng legacy = the public code's np.random.seed(42) then
    np.random.choice(np.arange(N), 16, replace=False), sorted."""
    from lorascope.ablation.setup import draw_rows

    state = np.random.get_state()
    try:
        np.random.seed(42)
        want = sorted(np.random.choice(np.arange(1000), size=16, replace=False))
    finally:
        np.random.set_state(state)
    assert draw_rows(1000, 16, 42, "legacy").tolist() == [int(i) for i in want]
    ours = draw_rows(1000, 16, 42)
    assert ours.tolist() != want and len(set(ours.tolist())) == 16
    sft = pl.DataFrame({"input_ids": [[i, i + 1] for i in range(30)],
                        "labels": [[-100, i] for i in range(30)]})  # fmt: skip
    rows = draw_rows(30, 3, 42, "legacy")
    got = select_sequences(sft, 3, 8, 42, "all", "legacy")
    assert [int(ids[0]) for ids, _ in got] == rows.tolist()
    with pytest.raises(ValueError, match="ablation.draw_rng"):
        draw_rows(30, 3, 42, "mt19937")


def test_check_table_names_first_mismatched_row():
    model, table = tiny_lora()
    check_table(table, model)  # the model's own table passes
    swapped = table.with_columns(
        pl.when(pl.col("index") == 4)
        .then(pl.lit("up"))
        .otherwise("module")
        .alias("module")
    )
    with pytest.raises(ValueError, match="components.parquet row 4 is"):
        check_table(swapped, model)
    with pytest.raises(ValueError, match="has 20 rows, the adapter 21"):
        check_table(table.head(20), model)


# Tests added from mutation testing (`make mutation SESSIONS="kl scalar_control"`).


def test_log_probs_of_low_precision_logits_are_float32():
    """bf16 logits are normalised in float32: small KLs survive."""
    from lorascope.ablation.kl import log_softmax, token_kl

    gen = torch.Generator().manual_seed(0)
    p_TX = torch.randn(4, VOCAB, generator=gen, dtype=torch.float64)
    q_TX = p_TX + 0.2 * torch.randn(4, VOCAB, generator=gen, dtype=torch.float64)
    logp = log_softmax(p_TX.bfloat16())
    assert logp.dtype == torch.float32
    assert log_softmax(p_TX).dtype == torch.float64  # never lowered
    got = token_kl(logp, log_softmax(q_TX.bfloat16())[None])[0].double()
    # the same bf16 inputs, normalised in float64 (from the definition)
    lp = torch.log_softmax(p_TX.bfloat16().double(), -1)
    lq = torch.log_softmax(q_TX.bfloat16().double(), -1)
    want = (lp.exp() * (lp - lq)).sum(-1)
    assert (want > 1e-3).all()
    # float32 log-probs of logits of size ~4: each log p - log q off by
    # ~1e-6 at most, so KL (a p-weighted sum) too; bf16 would be ~1e-2 off.
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_mlp_start_rerun_equals_the_whole_layer_rerun():
    """From layer L's kept mid-layer residual, an MLP-only ablation of layer L
    gives the same final states as rerunning layer L whole."""
    from lorascope.ablation.kl import PrefixRunner

    model, table = tiny_lora(dtype=torch.float64)
    mask_C = ((table["layer"] == 1) & (table["group"] == "mlp")).to_numpy()
    mult_VC = torch.from_numpy(~mask_C[None]).double()
    ids_1T = random_sequences(1)[0][0][None]
    with ScalarControl(lora_layers(model)) as control:
        runner = PrefixRunner(model, control)
        runner.reference(ids_1T)
        from_mlp = runner.run_from(1, mult_VC, mlp_start=True)
        whole = runner.run_from(1, mult_VC, mlp_start=False)
        unablated = runner.run_from(1, torch.ones_like(mult_VC))
    tol = reorder_tol(torch.float64, n=WIDTH, depth=depth(3), scale=whole.abs().max())
    torch.testing.assert_close(from_mlp, whole, **tol)
    assert (whole - unablated).abs().max() > 1e6 * tol["atol"]
    assert mask_C.sum() == 3


def test_unknown_layer_type_reruns_whole_layers_and_bad_decoder_is_named():
    from types import SimpleNamespace

    from lorascope.ablation.kl import PrefixRunner

    model, table = tiny_lora(n_layers=2)
    blocks = model.get_base_model().model.layers
    for block in blocks:  # same computation, a class the split is not known for
        block.__class__ = type("OtherDecoderLayer", (type(block),), {})
    with ScalarControl(lora_layers(model)) as control:
        runner = PrefixRunner(model, control)
        runner.reference(random_sequences(1)[0][0][None])
        mult_VC = torch.ones(1, table.height)
        with pytest.raises(ValueError, match="mlp_start needs decoder layers"):
            runner.run_from(0, mult_VC, mlp_start=True)
        assert runner.run_from(0, mult_VC).shape[0] == 1

    decoder = SimpleNamespace(layers=[])  # no final norm
    base = SimpleNamespace(get_decoder=lambda: decoder)
    fake = SimpleNamespace(get_base_model=lambda: base)
    with pytest.raises(ValueError, match="SimpleNamespace has no .layers/.norm"):
        PrefixRunner(fake, None)


def test_scalar_edits_set_then_scale_then_shift_masked_positions():
    """Each lora_A output becomes set (if given) * mult + add, add only at the
    positions of add_mask_T; recorded() is [B, T, C] in component order."""
    model, table = tiny_lora(rank=2, n_layers=2, dtype=torch.float64)
    layers = lora_layers(model)
    C = table.height
    ids_BT = random_sequences(1, length=6)[0][0][None].expand(2, -1)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad(), ScalarControl(layers) as control:
        control.record = True
        model(input_ids=ids_BT)
        plain_BTC = control.recorded()
        assert plain_BTC.shape == (2, 6, C)
        set_VTC = torch.randn(2, 6, C, generator=gen, dtype=torch.float64)
        mult_VC = torch.randn(2, C, generator=gen)  # float32: cast to the model's
        add_VC = torch.randn(2, C, generator=gen, dtype=torch.float64)
        mask_T = torch.tensor([True, False, True, True, False, False])
        control.set_VTC, control.mult_VC, control.add_VC = set_VTC, mult_VC, add_VC
        control.add_mask_T = mask_T
        assert control.set_VTC is set_VTC and control.mult_VC is mult_VC
        assert control.add_VC is add_VC
        out = model(input_ids=ids_BT).logits
        assert out.dtype == torch.float64
        want_BTC = (
            set_VTC * mult_VC.double()[:, None]
            + add_VC[:, None] * mask_T[None, :, None].double()
        )
        torch.testing.assert_close(control.recorded(), want_BTC, rtol=0, atol=0)
        control.add_mask_T = None  # every position
        model(input_ids=ids_BT)
        want_BTC = set_VTC * mult_VC.double()[:, None] + add_VC[:, None]
        torch.testing.assert_close(control.recorded(), want_BTC, rtol=0, atol=0)
        control.clear()  # edits and recording off, records gone
        assert control.set_VTC is control.mult_VC is control.add_VC is None
        with pytest.raises(RuntimeError) as err:
            control.recorded()
        assert str(err.value) == "no recorded forward: set record = True first"
        model(input_ids=ids_BT)
        with pytest.raises(RuntimeError, match="no recorded forward"):
            control.recorded()
        control.record = True
        model(input_ids=ids_BT)
        torch.testing.assert_close(control.recorded(), plain_BTC, rtol=0, atol=0)


def test_a_new_control_records_nothing_and_removed_hooks_edit_nothing():
    model, table = tiny_lora(n_layers=2)
    ids_1T = random_sequences(1)[0][0][None]
    with torch.no_grad():
        plain = model(input_ids=ids_1T).logits
        with ScalarControl(lora_layers(model)) as control:
            model(input_ids=ids_1T)
            with pytest.raises(RuntimeError, match="no recorded forward"):
                control.recorded()  # recording is off until asked for
            # float64 edits on a float32 model: mixed in as float32
            control.mult_VC = torch.zeros(1, table.height, dtype=torch.float64)
            assert (model(input_ids=ids_1T).logits - plain).abs().max() > 1e-3
            control.remove()  # then the with-block removes again: harmless
            assert torch.equal(model(input_ids=ids_1T).logits, plain)


def test_more_than_one_active_adapter_is_refused_naming_the_layer():
    from types import SimpleNamespace

    layer = SimpleNamespace(active_adapters=["a", "b"], lora_A={"a": 0, "b": 1})
    with pytest.raises(ValueError) as err:
        ScalarControl([layer])
    assert str(err.value) == (
        "expected exactly one active LoRA adapter on SimpleNamespace, found ['a', 'b']"
    )
