"""Rank-1 vs full fine-tune diffing (lorascope.diffing): the shares and KLs on
full fine-tunes whose answer is known."""

import copy

import numpy as np
import polars as pl
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen2Config, Qwen2ForCausalLM

from lorascope.causal.direct_effects import writes
from lorascope.core.components import lora_modules, table_from_modules
from lorascope.dashboards.diffing import pc_views
from lorascope.diffing.job import table3_markdown
from lorascope.diffing.passes import Text, measure, store_full_states
from lorascope.diffing.principal import (
    component_directions,
    feature_cosines,
    principal_directions,
)
from lorascope.diffing.states import Head
from lorascope.diffing.subspaces import cumulative_bases, orthonormal
from lorascope.diffing.tables import layer_table, resample, table3, top_contexts

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VOCAB, WIDTH, LAYERS = 53, 32, 3


def tiny_base(seed=0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        intermediate_size=48,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return Qwen2ForCausalLM(cfg).eval().double()


def with_lora(base, targets=ALL, scale=1.0):
    torch.manual_seed(1)
    lora = LoraConfig(
        r=1, lora_alpha=16, use_rslora=True, target_modules=targets,
        init_lora_weights=False,
    )  # fmt: skip
    model = get_peft_model(copy.deepcopy(base), lora).eval().double()
    with torch.no_grad():
        for _, layer in lora_modules(model):
            layer.lora_B["default"].weight.mul_(scale)
    return model


def merged(peft_model):
    return copy.deepcopy(peft_model).merge_and_unload().eval()


def texts(n=4, length=14, seed=2):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(0, VOCAB, (length - i,), generator=gen)
        scope = torch.ones(len(ids), dtype=torch.bool)
        scope[-1] = False
        out.append(Text("train" if i % 2 == 0 else "bench", i, ids, scope))
    return out


def run_diff(peft_model, full_model, tmp_path, sae_dirs=None):
    seqs = texts()
    store_full_states(full_model, seqs, tmp_path)
    write_CD, _ = writes(peft_model)
    table = table_from_modules([m for m, _ in lora_modules(peft_model)])
    layer_C = table["layer"].to_numpy()
    w_bases = cumulative_bases(write_CD, layer_C, LAYERS)
    s_bases = [orthonormal(x) for x in (sae_dirs or [torch.zeros(0, WIDTH)] * LAYERS)]
    head = Head.with_weights(
        Head.of(peft_model),
        full_model.get_decoder().norm.weight.detach(),
        full_model.get_output_embeddings().weight.detach(),
    )
    m = measure(peft_model, head, seqs, tmp_path, w_bases, s_bases)
    dims = {"write": [len(b) for b in w_bases], "sae": [len(b) for b in s_bases]}
    boot = resample(seqs, m, 50, 0)
    layers = layer_table(boot, dims, WIDTH)
    t3 = table3(boot, dims, WIDTH)
    return seqs, m, layers, t3


def value(t3, metric, source="train"):
    row = t3.filter((t3["metric"] == metric) & (t3["source"] == source))
    return row["value"].item()


def test_merged_adapter_is_all_captured(tmp_path):
    """Full fine-tune = base with the rank-1 adapter merged: Δh_full is
    Δh_rank1 (share 1) and KL(full || rank-1) is 0, to rounding."""
    peft_model = with_lora(tiny_base())
    _, m, layers, t3 = run_diff(peft_model, merged(peft_model), tmp_path)
    np.testing.assert_allclose(layers["r2_rank1"], 1, atol=1e-9)
    np.testing.assert_allclose(layers["cos_rank1"], 1, atol=1e-9)
    for source in ("train", "bench"):
        assert value(t3, "kl_full_rank1", source) < 1e-12
        assert value(t3, "kl_full_base", source) > 1e-4  # the adapter matters
        assert value(t3, "kl_captured_rank1", source) == pytest.approx(1, abs=1e-9)
    # Writing all of Δh_full at the last layer recovers the full model.
    last = layers.filter(layers["layer"] == LAYERS - 1)
    np.testing.assert_allclose(last["kl_captured_whole"], 1, atol=1e-9)
    # The markdown table has five columns on every row (no stray pipes).
    rows = [x for x in table3_markdown(t3).splitlines() if x.startswith("| ")]
    assert rows and all(x.count("|") == 5 for x in rows)
    # Every interval holds its point estimate.
    rows = t3.filter(t3["ci_low"].is_not_nan())
    assert (rows["ci_low"] <= rows["value"] + 1e-12).all()
    assert (rows["value"] <= rows["ci_high"] + 1e-12).all()


def test_writer_only_adapter_lives_in_its_write_span(tmp_path):
    """An adapter that only writes to the residual stream (o_proj/down_proj):
    at the first adapted layer every change is a lora_B write, so the write
    span holds all of Δh (share 1); the first adapted layer has down_proj
    only, since its MLP also responds to an o_proj write in the same layer,
    which no write direction spans. Later layers mix and share less."""
    targets = (
        r".*layers\.0\.mlp\.down_proj|.*layers\.[12]\.(self_attn\.o|mlp\.down)_proj"
    )
    peft_model = with_lora(tiny_base(), targets)
    _, _, layers, _ = run_diff(peft_model, merged(peft_model), tmp_path)
    first = layers.filter(layers["layer"] == 0)
    np.testing.assert_allclose(first["share_write"], 1, atol=1e-9)
    assert (first["dim_write"] == 1).all()
    assert (layers.filter(layers["layer"] == 2)["share_write"] < 1 - 1e-6).all()


def test_random_perturbation_is_chance(tmp_path):
    """A 'full fine-tune' that is an unrelated random perturbation of the
    base: Δh_rank1 predicts nothing of Δh_full and the write span holds
    about what a random subspace of its dimension holds."""
    base = tiny_base()
    peft_model = with_lora(base)
    full = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in full.model.layers.parameters():
            if p.ndim == 2:
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.05)
    _, _, layers, t3 = run_diff(peft_model, full, tmp_path)
    assert (layers["r2_rank1"] < 0.2).all()
    assert (layers["cos_rank1"].abs() < 0.35).all()
    excess = layers["share_write"] - layers["chance_write"]
    assert (excess.abs() < 0.15).all(), layers.select("layer", "share_write",
                                                      "chance_write")  # fmt: skip
    assert value(t3, "kl_captured_rank1") < 0.5


def test_contexts_rank_kl_and_centre(tmp_path):
    peft_model = with_lora(tiny_base(), scale=0.5)
    base = tiny_base()
    seqs, m, _, _ = run_diff(peft_model, base, tmp_path)  # full = base
    ctx = top_contexts(seqs, m, lambda ids: [str(i) for i in ids], k=5, width=2)
    assert ctx.height == 5
    assert (ctx["value"].diff().drop_nulls() <= 0).all()
    for row in ctx.iter_rows(named=True):
        assert row["acts"][row["center"]] == pytest.approx(row["value"], rel=1e-6)
        text = next(t for t in seqs if t.doc == row["doc"])
        assert row["tokens"][row["center"]] == str(int(text.ids_T[row["pos"]]))


def test_principal_directions_find_a_planted_direction():
    gen = np.random.default_rng(0)
    d_D = np.zeros(WIDTH)
    d_D[3] = 1.0
    sample = gen.normal(size=(200, WIDTH)) * 0.01 + np.outer(gen.normal(size=200), d_D)
    dirs, share = principal_directions(sample, 3)
    assert dirs.shape == (3, WIDTH) and share[0] > 0.9
    assert abs(dirs[0] @ d_D) == pytest.approx(1, abs=1e-3)
    pcs = [(dirs, share)] * LAYERS
    comps = [(0, "write", 2 * d_D), (1, "read", np.eye(WIDTH)[5]), (-1, "read", d_D)]
    table = feature_cosines(pcs, comps)
    # component 2 reads the embeddings (site -1): no row
    assert set(table["key"]) == {0, 1}
    first = table.filter((pl.col("key") == 0) & (pl.col("pc") == 0))
    assert first["cosine"].item() == pytest.approx(1, abs=1e-3)
    assert table.filter(pl.col("key") == 1)["cosine"].max() < 0.5


def test_model_diff_cosines_and_dashboard_panel(tmp_path):
    """A merged 'full fine-tune' whose change is all one component's write:
    that component's direction is Δh_full's first principal direction at
    its layer, and its dashboard panel says so."""
    targets = [r"model.layers.0.mlp.down_proj"]
    peft_model = with_lora(tiny_base(), targets, scale=20.0)
    seqs = texts()
    store_full_states(merged(peft_model), seqs, tmp_path)
    head = Head.with_weights(Head.of(peft_model), *(
        p.detach() for p in (peft_model.get_decoder().norm.weight,
                             peft_model.get_output_embeddings().weight)))  # fmt: skip
    zero = [torch.zeros(0, WIDTH, dtype=torch.float64)] * LAYERS
    m = measure(peft_model, head, seqs, tmp_path, zero, zero, sample_tokens=40)
    assert sum(len(x) for x in m.samples[0]) == 40
    pcs = [principal_directions(np.concatenate(rows), 2) for rows in m.samples]
    table = feature_cosines(pcs, component_directions(peft_model))
    row = table.filter((pl.col("layer") == 0) & (pl.col("pc") == 0))
    assert row["direction"].item() == "write"
    assert row["cosine"].item() == pytest.approx(1, abs=1e-6)
    features = pl.DataFrame({"feature": [0, 1], "component": [0, 0]})
    views = pc_views("lora", features, table)
    assert views[0]["best"]["pc"] == 0 and views[1]["layer"] == 0
    with pytest.raises(ValueError, match="feature_pcs.parquet: missing column"):
        pc_views("lora", features, table.drop("cosine"))


def test_stale_state_files_fail_naming_the_sequence(tmp_path):
    peft_model = with_lora(tiny_base())
    store_full_states(merged(peft_model), texts(length=10), tmp_path)
    zero = [torch.zeros(0, WIDTH, dtype=torch.float64)] * LAYERS
    head = Head.of(peft_model)
    with pytest.raises(ValueError, match="sequence 0 .* stale or foreign"):
        measure(peft_model, head, texts(length=14), tmp_path, zero, zero)


def test_more_training_sequences_than_the_sft_set_names_the_key(tmp_path):
    from lorascope.diffing.job import train_texts

    sft = tmp_path / "sft.parquet"
    pl.DataFrame(
        {"input_ids": [[1, 2, 3]] * 2, "labels": [[1, 2, 3]] * 2}
    ).write_parquet(sft)
    cfg = {
        "seed": 0,
        "diffing": {"n_sequences": 3, "max_tokens": 8, "token_scope": "all"},
    }
    with pytest.raises(ValueError, match=r"diffing.n_sequences: 3 .* has 2 rows"):
        train_texts(cfg, str(sft))
    cfg["diffing"]["n_sequences"] = 2
    (a, b) = train_texts(cfg, str(sft))
    assert a.source == "train" and a.scope_T.tolist() == [True, True, False]


def test_pass_one_states_are_reused_only_for_the_same_model_and_texts(tmp_path):
    """A failed run keeps pass 1's states; the rerun recomputes only what is
    missing, changed or made by another model."""
    from lorascope.diffing.passes import missing_states

    folder = tmp_path / "states"
    seqs = texts()
    full = merged(with_lora(tiny_base()))
    assert missing_states(seqs, folder, "model-a") == [0, 1, 2, 3]
    store_full_states(full, seqs, folder, only=[0, 2])
    assert missing_states(seqs, folder, "model-a") == [1, 3]
    store_full_states(full, seqs, folder, only=[1, 3])
    assert missing_states(seqs, folder, "model-a") == []
    changed = [*seqs[:3], Text("bench", 3, seqs[3].ids_T.flip(0), seqs[3].scope_T)]
    assert missing_states(changed, folder, "model-a") == [3]
    (folder / "seq-00001.safetensors").write_bytes(b"cut short")
    assert missing_states(seqs, folder, "model-a") == [1]
    assert missing_states(seqs, folder, "model-b") == [0, 1, 2, 3]  # retrained
    assert sorted(p.name for p in folder.iterdir()) == ["KEY"]
