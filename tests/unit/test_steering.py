"""Steering: alpha 0 is the unsteered model, shifts land where asked, KL, targets."""

import numpy as np
import polars as pl
import pytest
import torch
from conftest import add_random_lora, make_tiny_qwen
from numerics import reorder_tol, rounding_tol
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from lorascope.ablation.kl import PrefixRunner
from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.core.components import lora_modules, table_from_modules
from lorascope.core.decoding import build_prompts, generate_hf
from lorascope.steering.sweep import backtrack_stats, steered, steering_kl, sweep
from lorascope.steering.targets import (
    Target,
    choose_targets,
    component_direction,
    make_targets,
    sae_direction,
    sae_typical_activation,
)


def _lora(tokenizer, dtype):
    model = add_random_lora(make_tiny_qwen(len(tokenizer))).to(dtype)
    table = table_from_modules([m for m, _ in lora_modules(model)])
    return model, table


@pytest.fixture()
def lora(toy_tokenizer):
    model, table = _lora(toy_tokenizer, torch.float32)
    with ScalarControl(lora_layers(model)) as control:
        yield model, table, control


@pytest.fixture()
def lora64(toy_tokenizer):
    """float64: for tests comparing the prefix-reusing KL with a full forward,
    whose summation orders differ (tolerances: tests/support/numerics.py)."""
    model, table = _lora(toy_tokenizer, torch.float64)
    with ScalarControl(lora_layers(model)) as control:
        yield model, table, control


def kl_tol(tokenizer) -> float:
    """Bound on a KL that is 0 up to summation order: log-probs off by d give
    KL ~ d^2 / 2, far below d itself, so d bounds it."""
    return reorder_tol(torch.float64, n=len(tokenizer), depth=2 * 8 + 4)["rtol"]


def ids(tokenizer, text="12+34=46. Wait, 12+34=46."):
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])


def random_sae(n_components: int, d_sae: int = 8) -> JumpReLUSAE:
    torch.manual_seed(3)
    cfg = JumpReLUSAEConfig(d_in=n_components, d_sae=d_sae)
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.normal_()
        sae.b_dec.normal_()
        sae.threshold.fill_(0.01)
    return sae


def test_alpha_zero_is_bitwise_unsteered(lora, toy_tokenizer):
    """Adding 0.0 to every scalar is exact: the same computation, bitwise."""
    model, table, control = lora
    ids_1T = ids(toy_tokenizer)[None]
    delta_C = component_direction(table.height, 9, 2.5)
    with torch.no_grad():
        plain = model(input_ids=ids_1T).logits
        with steered(control, delta_C, 0.0):
            zero = model(input_ids=ids_1T).logits
        with steered(control, delta_C, 10.0):
            pushed = model(input_ids=ids_1T).logits
    torch.testing.assert_close(zero, plain, rtol=0, atol=0)
    assert not torch.allclose(pushed, plain)
    prompts = build_prompts(toy_tokenizer, ["What is 1+2?"])
    gen = dict(max_new_tokens=6, batch_size=1, progress=False)
    before = generate_hf(model, toy_tokenizer, prompts, **gen)
    with steered(control, delta_C, 0.0):
        assert generate_hf(model, toy_tokenizer, prompts, **gen) == before


def test_steering_shifts_target_scalar_by_alpha_times_typical(lora, toy_tokenizer):
    model, table, control = lora
    ids_1T = ids(toy_tokenizer)[None]
    target = 9  # layer 1, v: q and k of layer 1 and all of layer 0 stay put
    with torch.no_grad():
        control.record = True
        model(input_ids=ids_1T)
        plain_TC = control.recorded()[0]
        with steered(control, component_direction(table.height, target, 0.7), 3.0):
            control.record = True
            model(input_ids=ids_1T)
            pushed_TC = control.recorded()[0]
    diff_TC = pushed_TC - plain_TC
    # Upstream scalars are the very same computation: exactly unchanged.
    assert torch.equal(diff_TC[:, :target], torch.zeros_like(diff_TC[:, :target]))
    # (s + 2.1) - s in float32: two roundings at the scale of |s| + 2.1.
    scale = plain_TC[:, target].abs().max() + 2.1
    torch.testing.assert_close(
        diff_TC[:, target],
        torch.full_like(diff_TC[:, 0], 2.1),
        **rounding_tol(torch.float32, scale=2 * scale),
    )
    assert diff_TC[:, target + 1 :].abs().max() > 0  # downstream scalars respond


def test_sae_direction_is_scaled_decoder_row_and_lands_on_scalars(lora, toy_tokenizer):
    model, table, control = lora
    sae = random_sae(table.height)
    typical_F = sae_typical_activation(sae, torch.randn(50, table.height))
    latent = int(np.argmax(typical_F))
    delta_C = sae_direction(sae, latent, typical_F[latent])
    expected = typical_F[latent] * sae.W_dec[latent].detach().double().numpy()
    # decode(t e) - decode(0) in float32 cancels b_dec: error at its scale.
    scale = np.abs(expected).max() + sae.b_dec.abs().max().item()
    tol = rounding_tol(torch.float32, scale=4 * scale)
    np.testing.assert_allclose(delta_C, expected, **tol)
    with pytest.raises(ValueError, match="SAE latent 2 never fires"):
        sae_direction(sae, 2, 0.0)
    with torch.no_grad():
        control.record = True
        model(input_ids=ids(toy_tokenizer)[None])
        plain_TC = control.recorded()[0]
        with steered(control, delta_C, 2.0):
            control.record = True
            model(input_ids=ids(toy_tokenizer)[None])
            diff_TC = control.recorded()[0] - plain_TC
    # q, k, v of layer 0 read the embeddings, so they move by exactly the delta.
    want = torch.tensor(2.0 * delta_C[:3], dtype=torch.float32)
    want = want.expand_as(diff_TC[:, :3])
    scale = plain_TC[:, :3].abs().max() + want.abs().max()
    tol = rounding_tol(torch.float32, scale=2 * scale)
    torch.testing.assert_close(diff_TC[:, :3], want, **tol)


def test_steering_kl_matches_full_forward(lora64, toy_tokenizer):
    model, table, control = lora64
    ids_T = ids(toy_tokenizer)
    scope_T = torch.arange(len(ids_T)) < len(ids_T) - 1
    delta_C = component_direction(table.height, 10, 0.5)
    target = Target("component", 10, "L1.o", "config", delta_C)
    alphas = [0.0, 1.0, 30.0]
    kl_GA = steering_kl(
        PrefixRunner(model, control),
        [(ids_T, scope_T)],
        [target],
        alphas,
        table["layer"].to_numpy(),
    )
    with torch.no_grad():
        ref = torch.log_softmax(model(input_ids=ids_T[None]).logits[0], -1)
        for a, alpha in enumerate(alphas):
            with steered(control, delta_C, alpha):
                logq = torch.log_softmax(model(input_ids=ids_T[None]).logits[0], -1)
            kl = (ref.exp() * (ref - logq)).sum(-1)[scope_T].mean()
            tol = kl_tol(toy_tokenizer)
            assert kl_GA[0, a] == pytest.approx(float(kl), rel=tol, abs=tol)
    assert kl_GA[0, 0] == pytest.approx(0.0, abs=kl_tol(toy_tokenizer))
    assert kl_GA[0, 2] > kl_GA[0, 1] > 1e3 * kl_tol(toy_tokenizer)


def test_choose_targets_config_keywords_and_fallback():
    kl = pl.DataFrame({"index": [0, 1, 2], "kl_mean": [0.1, 0.5, 0.3]})
    cfg = dict(
        components=[],
        sae_latents=[],
        top_kl=2,
        max_sae_features=1,
        explanation_keywords=["wait", "backtrack"],
        sae_select="keyword",
    )
    expl = pl.DataFrame(
        {"latent": [4, 7, 9], "explanation": ["digits", "Wait, then redo", None]}
    )
    assert choose_targets(cfg, kl, expl) == [
        ("component", 1, "top_kl"),
        ("component", 2, "top_kl"),
        ("sae", 7, "sae_keyword"),
    ]
    none = expl.with_columns(explanation=pl.lit("digits"))
    assert choose_targets(cfg, kl, none) == [
        ("component", 1, "top_kl_fallback"),
        ("component", 2, "top_kl_fallback"),
    ]
    assert choose_targets(cfg, kl, None)[0] == ("component", 1, "top_kl_fallback")
    no_sae = dict(cfg, max_sae_features=0)
    assert choose_targets(no_sae, kl, expl)[0] == ("component", 1, "top_kl")
    explicit = dict(cfg, components=[2], sae_latents=[5])
    assert choose_targets(explicit, kl, expl) == [
        ("component", 2, "config"),
        ("sae", 5, "config"),
    ]


def test_choose_sae_targets_by_causal_ranking():
    kl = pl.DataFrame({"index": [0, 1], "kl_mean": [0.1, 0.5]})
    cfg = dict(
        components=[], sae_latents=[], top_kl=1, max_sae_features=2,
        explanation_keywords=["wait"], sae_select="keyword_by_kl",
    )  # fmt: skip
    expl = pl.DataFrame(
        {"latent": [4, 7, 9, 2], "explanation": ["Wait a", "digits", "wait b", "wait"]}
    )
    sae_kl = pl.DataFrame({"latent": [2, 4, 7, 9], "kl_mean": [0.01, 0.2, 0.9, 0.5]})
    # keyword matches 4, 9, 2; ranked by feature KL: 9 (0.5), 4 (0.2)
    assert choose_targets(cfg, kl, expl, sae_kl)[1:] == [
        ("sae", 9, "sae_keyword_kl"),
        ("sae", 4, "sae_keyword_kl"),
    ]
    top = dict(cfg, sae_select="top_kl")
    assert choose_targets(top, kl, None, sae_kl)[1:] == [
        ("sae", 7, "sae_top_kl"),
        ("sae", 9, "sae_top_kl"),
    ]
    with pytest.raises(ValueError, match="sae_select 'top_kl' needs the feature KL"):
        choose_targets(top, kl, expl)


def test_backtrack_stats_counts_whole_words():
    texts = ["Wait, 3. Hmm wait", "Waiting is not it", "fine"]
    got = backtrack_stats(texts, [10, 5, 5], ["Wait", "Hmm"])
    assert got["backtrack_count"] == 2
    assert got["backtrack_per_1k_tokens"] == pytest.approx(100.0)
    assert got["backtrack_frac_samples"] == pytest.approx(1 / 3)


def test_component_direction_rejects_zero_typical():
    with pytest.raises(ValueError, match="component 4: typical"):
        component_direction(7, 4, 0.0)


def test_sweep_rows_and_alpha_zero(lora64, toy_tokenizer):
    model, table, control = lora64
    bench = [
        {"problem": "What is 1+2?", "answer": "3", "choices": None, "grader": "math"},
        {"problem": "What is 2+2?", "answer": "4", "choices": None, "grader": "math"},
    ]
    ids_T = ids(toy_tokenizer)
    seqs = [(ids_T, torch.arange(len(ids_T)) < len(ids_T) - 1)]
    targets = [
        Target(
            "component", 3, "L0.o", "top_kl", component_direction(table.height, 3, 1.0)
        )
    ]
    out = sweep(
        model,
        toy_tokenizer,
        control,
        targets,
        [0.0, 100.0],
        bench,
        seqs,
        table["layer"].to_numpy(),
        words=["Wait"],
        max_new_tokens=5,
        batch_size=2,
    )
    assert out.height == 2 and out["alpha"].to_list() == [0.0, 100.0]
    assert out["kl_to_unsteered"][0] == pytest.approx(0.0, abs=kl_tol(toy_tokenizer))
    assert out["kl_to_unsteered"][1] > 1e3 * kl_tol(toy_tokenizer)
    assert set(out.columns) >= {"accuracy", "backtrack_per_1k_tokens", "selection"}
    assert control.add_VC is None and control.mult_VC is None  # nothing left on


def test_make_targets_labels_directions_and_clear_errors():
    kl = pl.DataFrame(
        {
            "index": [0, 1],
            "layer": [0, 0],
            "module": ["q", "gate"],
            "rank_slot": [0, 0],
            "mean_abs_act": [0.5, 2.0],
            "kl_mean": [0.1, 0.2],
        }
    )
    (t,) = make_targets([("component", 1, "top_kl")], kl)
    assert (t.label, t.selection) == ("L0.gate", "top_kl")
    np.testing.assert_allclose(t.delta_C, [0.0, 2.0])
    with pytest.raises(ValueError, match="steering.components: no component 5"):
        make_targets([("component", 5, "config")], kl)
    with pytest.raises(ValueError, match="SAE latent 3 chosen but no SAE"):
        make_targets([("sae", 3, "config")], kl)
    sae = random_sae(2)
    with pytest.raises(ValueError, match="steering.sae_latents: no latent 9"):
        make_targets([("sae", 9, "config")], kl, sae, np.ones(8))
    # a keyword-matched latent that never fires is left out (logged); one
    # named in the config fails
    typical_F = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    picked = [("component", 1, "top_kl"), ("sae", 1, "sae_keyword")]
    picked.append(("sae", 2, "sae_keyword"))
    targets = make_targets(picked, kl, sae, typical_F)
    assert [t.label for t in targets] == ["L0.gate", "sae.2"]
    for why in ("sae_keyword_kl", "sae_top_kl"):  # any automatic choice
        assert make_targets([("sae", 1, why)], kl, sae, typical_F) == []
    with pytest.raises(ValueError, match="SAE latent 1 never fires"):
        make_targets([("sae", 1, "config")], kl, sae, typical_F)
    # rank 2: every target names its direction, the first one included (the
    # label extraction and the ablation tables give it: L0.q#0, not L0.q)
    kl2 = pl.DataFrame(
        {
            "index": [0, 1, 2, 3],
            "layer": [0, 0, 0, 0],
            "module": ["q", "q", "gate", "gate"],
            "rank_slot": [0, 1, 0, 1],
            "mean_abs_act": [0.5, 2.0, 1.0, 3.0],
            "kl_mean": [0.1, 0.2, 0.3, 0.4],
        }
    )
    chosen = [("component", i, "config") for i in (0, 1, 3)]
    targets = make_targets(chosen, kl2)
    assert [t.label for t in targets] == ["L0.q#0", "L0.q#1", "L0.gate#1"]
    np.testing.assert_allclose(targets[2].delta_C, [0.0, 0.0, 0.0, 3.0])


def test_negative_alpha_shifts_the_other_way(lora, toy_tokenizer):
    model, table, control = lora
    ids_1T = ids(toy_tokenizer)[None]
    delta_C = component_direction(table.height, 9, 0.7)
    with torch.no_grad():
        control.record = True
        model(input_ids=ids_1T)
        plain_TC = control.recorded()[0]
        with steered(control, delta_C, -3.0):
            control.record = True
            model(input_ids=ids_1T)
            diff_T = control.recorded()[0][:, 9] - plain_TC[:, 9]
    tol = rounding_tol(torch.float32, scale=2 * (plain_TC[:, 9].abs().max() + 2.1))
    torch.testing.assert_close(diff_T, torch.full_like(diff_T, -2.1), **tol)


def test_add_mask_shifts_only_the_masked_positions(lora, toy_tokenizer):
    model, table, control = lora
    ids_1T = ids(toy_tokenizer)[None]
    T = ids_1T.shape[1]
    mask_T = torch.arange(T) >= T // 2
    with torch.no_grad():
        control.record = True
        model(input_ids=ids_1T)
        plain_TC = control.recorded()[0]
        with steered(control, component_direction(table.height, 0, 1.0), 5.0):
            control.add_mask_T = mask_T
            control.record = True
            model(input_ids=ids_1T)
            got_TC = control.recorded()[0]
    # causal: positions before the first shifted one are the same computation
    assert torch.equal(got_TC[: T // 2], plain_TC[: T // 2])
    assert (got_TC[T // 2 :, 0] - plain_TC[T // 2 :, 0] - 5.0).abs().max() < 1e-5


def _probe(model, layer_index: int):
    """Record the target lora_A's (edited) output of every forward."""
    calls = []
    lora_a = lora_layers(model)[layer_index].lora_A["default"]
    handle = lora_a.register_forward_hook(lambda m, i, o: calls.append(o.detach()))
    return calls, handle


def test_generated_positions_leave_the_prompt_pass_alone(lora, toy_tokenizer):
    """steering.positions generated: the prompt's forward is unsteered, every
    decode step is shifted; all: the prompt's forward is shifted too."""
    from lorascope.steering.sweep import applied

    model, table, control = lora
    prompts = build_prompts(toy_tokenizer, ["What is 1+2?"])
    gen = dict(max_new_tokens=4, batch_size=1, progress=False)
    delta_C = component_direction(table.height, 0, 1.0)
    runs = {}
    for name, alpha, positions in (("plain", 0.0, "all"), ("gen", 50.0, "generated"),
                                   ("all", 50.0, "all")):  # fmt: skip
        calls, handle = _probe(model, 0)  # after ScalarControl's hook
        with applied(model, control, delta_C, alpha, positions):
            generate_hf(model, toy_tokenizer, prompts, **gen)
        handle.remove()
        runs[name] = calls
    assert control.add_VC is None
    assert len(runs["plain"]) == len(runs["gen"]) > 1
    assert torch.equal(runs["gen"][0], runs["plain"][0])  # prompt pass alone
    assert not torch.allclose(runs["all"][0], runs["plain"][0])
    # First decode step: its input token came from the unsteered prompt pass,
    # so it is the plain run's too, and layer 0's q reads only that token's
    # embedding: the scalar differs by exactly the shift (float32 rounding).
    first_decode = runs["gen"][1][0, -1, 0] - runs["plain"][1][0, -1, 0]
    tol = rounding_tol(torch.float32, scale=2 * (50 + runs["plain"][1].abs().max()))
    assert abs(float(first_decode) - 50.0) <= tol["atol"] + 50 * tol["rtol"]
    with pytest.raises(ValueError, match="steering.positions"):
        with applied(model, control, delta_C, 1.0, "prompt"):
            pass


@pytest.mark.parametrize("where", ["all", "generated", "residual"])
def test_alphas_sharing_generate_calls_equal_one_call_per_alpha(
    lora64, toy_tokenizer, where
):
    """Several strengths in the same generate calls (each row its own shift,
    set per call through on_batch) give what one call per strength gives:
    scalar shifts at every position or only generated ones, and residual
    shifts."""
    from vllm_support import assert_same_greedy

    from lorascope.steering.residual import (
        ResidualShift,
        ResidualSpec,
        lora_a_direction,
    )
    from lorascope.steering.sweep import applied

    model, table, control = lora64
    problems = ["What is 1+2?", "What is 12+34?", "What is 5+5?"]
    prompts = build_prompts(toy_tokenizer, problems)
    alphas = [2.0, -15.0, 60.0]
    shift, delta_C, positions = None, np.zeros(table.height), "all"
    if where == "residual":
        spec = ResidualSpec(1, "up", lora_a_direction(model, 1, "up", 0))
        shift = ResidualShift(model, spec)
    else:
        delta_C, positions = component_direction(table.height, 4, 1.0), where
    # 9 rows in calls of 4 (sorted by prompt length): strengths share calls
    rows = [p for _ in alphas for p in prompts]
    alpha_R = np.repeat(alphas, len(prompts))
    calls = []
    with applied(model, control, delta_C, alpha_R, positions, shift) as on_batch:

        def record(idx):
            calls.append(sorted({float(alpha_R[i]) for i in idx}))
            on_batch(idx)

        together = generate_hf(
            model, toy_tokenizer, rows, max_new_tokens=10, batch_size=4,
            progress=False, on_batch=record,
        )  # fmt: skip
    assert any(len(c) > 1 for c in calls), calls
    texts = {}
    for a, alpha in enumerate(alphas):
        with applied(model, control, delta_C, alpha, positions, shift):
            alone = generate_hf(model, toy_tokenizer, prompts, max_new_tokens=10,
                                batch_size=3, progress=False)  # fmt: skip
            mine = together[a * len(prompts) : (a + 1) * len(prompts)]
            # float64: equal decodes expected; the near-tie escape's forward
            # is steered at every position (as the decode is under `all`)
            eos = toy_tokenizer.eos_token_id
            assert_same_greedy(model, toy_tokenizer, prompts, mine, alone, eos)
        texts[alpha] = [c.text for c in alone]
    if shift is not None:
        shift.remove()
    # the strengths steer differently, so each row got its own
    assert len({tuple(t) for t in texts.values()}) == len(alphas)
    assert control.add_VC is None


def test_steering_kl_masks_and_sequence_average(lora64, toy_tokenizer):
    model, table, control = lora64
    ids_T = ids(toy_tokenizer)
    T = len(ids_T)
    scope_T = torch.arange(T) < T - 1
    target = Target("component", 2, "L0.v", "config",
                    component_direction(table.height, 2, 0.5))  # fmt: skip
    runner = PrefixRunner(model, control)
    layer_C = table["layer"].to_numpy()
    args = ([(ids_T, scope_T)], [target], [0.0, 20.0], layer_C)
    full = steering_kl(runner, *args)
    none = steering_kl(runner, *args, masks=[torch.zeros(T, dtype=torch.bool)])
    half = steering_kl(runner, *args, masks=[torch.arange(T) >= T // 2])
    every = steering_kl(runner, *args, masks=[torch.ones(T, dtype=torch.bool)])
    tol = kl_tol(toy_tokenizer)
    assert none[0, 1] == pytest.approx(0.0, abs=tol)
    assert every[0, 1] == pytest.approx(full[0, 1], rel=tol, abs=tol)
    assert tol < half[0, 1] < full[0, 1]
    # two sequences of different length: pooled vs mean of per-sequence means
    short = (ids_T[:6], torch.arange(6) < 5)
    seqs = [(ids_T, scope_T), short]
    pooled = steering_kl(runner, seqs, [target], [20.0], layer_C)
    per_seq = [steering_kl(runner, [s], [target], [20.0], layer_C)[0, 0] for s in seqs]
    means = steering_kl(runner, seqs, [target], [20.0], layer_C, average="sequences")
    assert means[0, 0] == pytest.approx(np.mean(per_seq), rel=1e-9)
    n = [int(scope_T.sum()), 5]
    assert pooled[0, 0] == pytest.approx(np.average(per_seq, weights=n), rel=1e-9)


def test_residual_shift_lands_in_the_residual_stream(lora64, toy_tokenizer):
    from lorascope.steering.residual import (
        ResidualShift,
        ResidualSpec,
        lora_a_direction,
        mean_residual_norm,
        residual_targets,
    )

    model, table, control = lora64
    ids_T = ids(toy_tokenizer)
    runner = PrefixRunner(model, control)
    q_D = lora_a_direction(model, 1, "q", 0)
    assert np.linalg.norm(q_D) == pytest.approx(1.0)
    raw = lora_a_direction(model, 1, "q", 0, unit=False)
    np.testing.assert_allclose(q_D * np.linalg.norm(raw), raw, rtol=1e-12)
    with pytest.raises(ValueError, match="down_proj reads no residual"):
        lora_a_direction(model, 1, "down", 0)
    with torch.no_grad():
        runner.reference(ids_T[None])
        inputs = [x.clone() for x in runner.inputs]
        mids = [x.clone() for x in runner.mids]
        for module, kept in (("q", inputs), ("up", mids)):
            vec = 3.0 * lora_a_direction(model, 1, module, 0)
            shift = ResidualShift(model, ResidualSpec(1, module, vec))
            shift.scale_V = torch.tensor([2.0])
            runner.reference(ids_T[None])
            shift.remove()
            got = (runner.inputs if module == "q" else runner.mids)[1] - kept[1]
            want = torch.as_tensor(2.0 * vec).expand_as(got)
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
            # upstream of the injection point nothing changes
            assert torch.equal(runner.inputs[0], inputs[0])
    norm = mean_residual_norm(runner, [(ids_T, torch.ones(len(ids_T), dtype=bool))],
                              1, "up")  # fmt: skip
    assert norm == pytest.approx(float(mids[1][0].norm(dim=-1).mean()), rel=1e-9)
    targets = make_targets(
        [("component", i, "config") for i in (7, 10, 11)], _kl(table)
    )  # fmt: skip  (L1.q, L1.o, L1.gate)
    extra = residual_targets(targets, table, model, runner,
                             [(ids_T, torch.ones(len(ids_T), dtype=bool))])  # fmt: skip
    assert [(t.kind, t.id, t.label) for t in extra] == [
        ("residual", 7, "resid L1.q"), ("residual", 11, "resid L1.gate")]  # fmt: skip
    assert not extra[0].delta_C.any()


def _kl(table):
    return table.select("index", "layer", "module", "rank_slot").with_columns(
        mean_abs_act=pl.lit(1.0), kl_mean=pl.lit(0.1)
    )


def test_residual_target_kl_matches_full_forward(lora64, toy_tokenizer):
    from lorascope.steering.residual import (
        ResidualShift,
        ResidualSpec,
        lora_a_direction,
    )

    model, table, control = lora64
    ids_T = ids(toy_tokenizer)
    scope_T = torch.arange(len(ids_T)) < len(ids_T) - 1
    spec = ResidualSpec(1, "gate", 4.0 * lora_a_direction(model, 1, "gate", 0))
    target = Target("residual", 11, "resid L1.gate", "config",
                    np.zeros(table.height), spec)  # fmt: skip
    shift = ResidualShift(model, spec)
    runner = PrefixRunner(model, control)
    layer_C = table["layer"].to_numpy()
    seqs = [(ids_T, scope_T)]
    kl_GA = steering_kl(runner, seqs, [target], [0.0, 5.0], layer_C, shifts={0: shift})
    with torch.no_grad():
        ref = torch.log_softmax(model(input_ids=ids_T[None]).logits[0], -1)
        shift.scale_V = torch.tensor([5.0])
        logq = torch.log_softmax(model(input_ids=ids_T[None]).logits[0], -1)
    shift.remove()
    kl = float((ref.exp() * (ref - logq)).sum(-1)[scope_T].mean())
    tol = kl_tol(toy_tokenizer)
    assert kl_GA[0, 0] == pytest.approx(0.0, abs=tol)
    assert kl_GA[0, 1] == pytest.approx(kl, rel=tol, abs=tol) and kl > 1e3 * tol


def test_sweep_grades_truncated_completions_as_evaluation_does(lora, monkeypatch):
    """A truncated completion without the answer marker is wrong, even if its
    text holds the right number (the grader gets `truncated`)."""
    from lorascope.ablation import generation
    from lorascope.core.decoding import Completion
    from lorascope.steering import sweep as steering_mod

    model, table, control = lora
    bench = [{"problem": "What is 1+2?", "answer": "3", "choices": None,
              "grader": "math"}]  # fmt: skip
    for truncated, want in ((False, 1.0), (True, 0.0)):
        monkeypatch.setattr(
            generation, "generate_hf",
            lambda *a, t=truncated, **k: [Completion("so \\boxed{3}", 5, t)],
        )  # fmt: skip
        monkeypatch.setattr(generation, "build_prompts", lambda tok, p, s: p)
        got = steering_mod.generation_metrics(
            model, None, control, bench, np.zeros(table.height), words=["Wait"],
            max_new_tokens=5, batch_size=1,
        )  # fmt: skip
        assert got["accuracy"] == want and got["truncated_frac"] == float(truncated)


@pytest.mark.gpu
def test_steering_shifts_follow_the_model_onto_cuda(toy_tokenizer):
    """Shifts are built on the CPU; every hook moves them to the activation's
    device (scalar and residual shifts, masks, generation and KL)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from lorascope.steering.residual import (
        ResidualShift,
        ResidualSpec,
        lora_a_direction,
    )
    from lorascope.steering.sweep import applied

    model, table = _lora(toy_tokenizer, torch.float32)
    model = model.to("cuda")
    with ScalarControl(lora_layers(model)) as control:
        spec = ResidualSpec(1, "up", 5.0 * lora_a_direction(model, 1, "up", 0))
        shift = ResidualShift(model, spec)
        prompts = build_prompts(toy_tokenizer, ["What is 1+2?"])
        gen = dict(max_new_tokens=5, batch_size=1, progress=False)
        plain = generate_hf(model, toy_tokenizer, prompts, **gen)
        delta_C = component_direction(table.height, 4, 1.0)
        for positions in ("all", "generated"):
            with applied(model, control, delta_C, 100.0, positions, shift):
                generate_hf(model, toy_tokenizer, prompts, **gen)
        assert generate_hf(model, toy_tokenizer, prompts, **gen) == plain
        ids_T = ids(toy_tokenizer)
        T = len(ids_T)
        target = Target("residual", 5, "resid L1.up", "config", np.zeros(21), spec)
        seqs = [(ids_T, torch.arange(T) < T - 1)]
        kl = steering_kl(PrefixRunner(model, control), seqs, [target], [0.0, 30.0],
                         table["layer"].to_numpy(), shifts={0: shift},
                         masks=[torch.arange(T) >= 2])  # fmt: skip
        shift.remove()
    assert kl[0, 0] < 1e-6 < kl[0, 1]
