"""LoRA scalars rebuild PEFT's own output; MLP units equal a direct computation;
the shard pass streams the right top-k and resumes after a kill."""

from __future__ import annotations

import pytest
import torch
from conftest import add_random_lora, make_tiny_qwen
from numerics import reorder_tol, rounding_tol

from lorascope.activations.extraction import (
    ExtractSettings,
    extract_to_shards,
    shard_summary,
)
from lorascope.activations.hooks import (
    ExtractError,
    LoraCapture,
    MlpCapture,
    forward_batch,
    iter_doc_values,
    make_batches,
    pad_batch,
)
from lorascope.core.components import lora_modules
from lorascope.core.config import schema_defaults
from lorascope.core.sample import token_priority
from lorascope.core.shards import open_shards
from lorascope.core.topk import signed_features

VOCAB = 97
# Tests that compare two computation paths (hooks vs PEFT's own output,
# batched vs alone) run the tiny model in float64, so the tolerance from
# tests/support/numerics.py holds on every CPU: the hidden size 32 and the MLP width
# 64 are the longest reductions, ~8 chained per layer.
F64 = torch.float64


def tiny_lora_f64(layers: int, seed: int, r: int = 1):
    return add_random_lora(make_tiny_qwen(VOCAB, layers=layers), r=r, seed=seed).to(F64)


def forward_tol(layers: int, scale) -> dict:
    return reorder_tol(F64, n=64, depth=8 * layers + 2, scale=scale)


def _seqs(n=5, seed=0, lo=3, hi=12):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi, (n,), generator=g).tolist()
    return [torch.randint(1, VOCAB, (n_,), generator=g).tolist() for n_ in lens]


def _record_io(peft_model):
    """Hooks storing each LoRA layer's input and PEFT output of the last call."""
    seen, handles = {}, []
    for info, layer in lora_modules(peft_model):

        def hook(mod, inp, out, name=info.name):
            seen[name] = (inp[0].detach(), out.detach())

        handles.append(layer.register_forward_hook(hook))
    return seen, handles


@pytest.mark.parametrize("r", [1, 2])
def test_scalars_rebuild_peft_delta_for_every_module(r):
    model = tiny_lora_f64(layers=2, seed=1, r=r)
    cap = LoraCapture(model)
    pairs = lora_modules(model)
    assert cap.n_components == r * len(pairs) == r * 14
    assert {info.module for info, _ in pairs} == {
        "q",
        "k",
        "v",
        "o",
        "gate",
        "up",
        "down",
    }
    seen, handles = _record_io(model)
    ids, mask = pad_batch(_seqs(3), "cpu")  # padded: lengths differ
    lora_TC, _ = forward_batch(model, ids, mask, cap, None, dtype=F64)
    assert lora_TC.shape == (int(mask.sum()), r * 14)
    col = 0
    for info, layer in pairs:
        x_BLd, y_BLo = seen[info.name]
        delta_TO = (y_BLo - layer.base_layer(x_BLd))[mask]
        B = layer.lora_B["default"].weight  # (d_out, r)
        scalars_Tr = lora_TC[:, col : col + r]
        rebuilt_TO = scalars_Tr @ B.T * layer.scaling["default"]
        # delta = y - base(x) cancels: its error scales with |y|, not |delta|.
        tol = forward_tol(2, y_BLo.abs().max())
        torch.testing.assert_close(rebuilt_TO, delta_TO, **tol)
        col += r
    for h in handles:
        h.remove()
    assert cap.columns[:2] == (["L0.q#0", "L0.q#1"] if r == 2 else ["L0.q", "L0.k"])


def _mlp_inputs(model, ids, mask):
    """Each layer's MLP input h (pre-hook on layer.mlp) for one forward."""
    hs, handles = {}, []
    for i, layer in enumerate(model.get_decoder().layers):
        handles.append(
            layer.mlp.register_forward_pre_hook(
                lambda m, a, i=i: hs.__setitem__(i, a[0].detach())
            )
        )
    model(input_ids=ids, attention_mask=mask.long())
    for h in handles:
        h.remove()
    return hs


def test_mlp_act_gate_up_equals_base_model_direct():
    n = 5
    peft_model = tiny_lora_f64(layers=3, seed=2)
    mlp = MlpCapture(peft_model, n, "act_gate_up")
    ids, mask = pad_batch(_seqs(4), "cpu")
    cap = LoraCapture(peft_model)
    _, mlp_TU = forward_batch(peft_model, ids, mask, cap, mlp, dtype=F64)
    base = make_tiny_qwen(VOCAB, layers=3).to(F64)  # same seed: unadapted weights
    hs = _mlp_inputs(base, ids, mask)
    want = []
    for i, layer in enumerate(base.model.layers):
        m = layer.mlp
        h = hs[i]
        want.append((m.act_fn(m.gate_proj(h)) * m.up_proj(h))[..., :n][mask])
    want_TU = torch.cat(want, dim=1)
    torch.testing.assert_close(mlp_TU, want_TU, **forward_tol(3, want_TU.abs().max()))


def test_mlp_up_proj_is_adapted_output_channels():
    n = 4
    peft_model = tiny_lora_f64(layers=2, seed=3)
    mlp = MlpCapture(peft_model, n, "up_proj")
    ids, mask = pad_batch(_seqs(2), "cpu")
    _, mlp_TU = forward_batch(peft_model, ids, mask, None, mlp, dtype=F64)
    hs = _mlp_inputs(peft_model.get_base_model(), ids, mask)  # LoRA on
    want = []
    for i, layer in enumerate(peft_model.get_base_model().model.layers):
        up = layer.mlp.up_proj
        A, B = up.lora_A["default"].weight, up.lora_B["default"].weight
        out = up.base_layer(hs[i]) + hs[i] @ A.T @ B.T * up.scaling["default"]
        want.append(out[..., :n][mask])
    want_TU = torch.cat(want, dim=1)
    torch.testing.assert_close(mlp_TU, want_TU, **forward_tol(2, want_TU.abs().max()))


def test_bad_settings_fail_clearly():
    peft_model = add_random_lora(make_tiny_qwen(VOCAB, layers=1))
    with pytest.raises(ExtractError, match="mlp_neurons_per_layer=999"):
        MlpCapture(peft_model, 999)
    with pytest.raises(ExtractError, match="mlp_tensor"):
        MlpCapture(peft_model, 2, "down_proj")
    with pytest.raises(ValueError, match="activations.mlp_tensor"):
        schema_defaults("activations", {"mlp_tensor": "nope"})


def test_batches_respect_budget_and_cover_all():
    lengths = [5, 1, 9, 3, 3, 20, 2]
    batches = make_batches(lengths, 10)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 10


CFG = {
    **schema_defaults("activations"),
    **dict(batch_tokens=24, shard_tokens=20, dtype="float32", top_k=4),
}


def _run(tmp_path, seqs, on_tokens=lambda n: None, fp="fp1", **kw):
    """Shards of a float64 tiny model: what they store (float32) is the
    float64 value rounded, the same whichever batch computed it."""
    model = tiny_lora_f64(layers=2, seed=4)
    cfg = ExtractSettings.from_config({**CFG, "mlp_neurons_per_layer": 3, **kw})
    docs = [10 + i for i in range(len(seqs))]
    return model, extract_to_shards(
        model, seqs, docs, tmp_path, cfg, fp, "cpu", on_tokens=on_tokens
    )


def _check_topk(top, values_TF, doc_T, pos_T, tol=None):
    """Streamed top-k == brute force. Many tokens tie (layer-0 inputs depend on
    the token id alone), so compare the values, and check that each kept
    (doc, pos) really has that value. Exact for the stored values; `tol` for
    values recomputed in other batches."""
    k = top.k
    tol = tol or {"rtol": 0.0, "atol": 0.0}
    want_FK = values_TF.topk(k, dim=0).values.T
    torch.testing.assert_close(top.values_FK, want_FK, **tol)
    where = {
        (int(d), int(p)): t for t, (d, p) in enumerate(zip(doc_T, pos_T, strict=True))
    }
    rows = torch.tensor(
        [
            [where[(int(d), int(p))] for d, p in zip(ds, ps, strict=True)]
            for ds, ps in zip(top.doc_FK, top.pos_FK, strict=True)
        ]
    )  # (F, k) token index of each kept example
    got = values_TF.gather(0, rows.T).T
    torch.testing.assert_close(got, top.values_FK, **tol)
    assert all(len(set(r.tolist())) == k for r in rows)  # no token twice


def _check_sample(sample, values_TF, doc_T, pos_T):
    prio_T = token_priority(doc_T, pos_T)
    frame = sample.to_frame()
    for f in range(values_TF.shape[1]):
        active = torch.nonzero(values_TF[:, f] > 0).flatten()
        chosen = active[torch.argsort(prio_T[active])[: sample.k]].tolist()
        want = {(int(doc_T[t]), int(pos_T[t]), float(values_TF[t, f])) for t in chosen}
        got = frame.filter(frame["feature"] == f).select("doc", "pos", "value")
        assert set(got.iter_rows()) == want


@pytest.mark.parametrize("polarity", ["both", "abs"])
def test_shard_pass_stores_tokens_and_streams_exact_topk(tmp_path, polarity):
    seqs = _seqs(9, seed=5)
    model, manifest = _run(tmp_path, seqs, polarity=polarity)
    ss = open_shards(tmp_path)
    assert len(ss.shards) > 2 and ss.n_tokens == sum(map(len, seqs))
    data = ss.load_all()
    assert data["token_id"].tolist() == [t for s in seqs for t in s]
    assert data["doc"].tolist() == [10 + i for i, s in enumerate(seqs) for _ in s]
    # every doc's stored scalars equal the doc run alone (padding-free)
    cap = LoraCapture(model)
    for d, cols in ss.iter_docs([10, 14, 18]):
        ids, mask = pad_batch([seqs[d - 10]], "cpu")
        alone, _ = forward_batch(model, ids, mask, cap, None, dtype=F64)
        tol = rounding_tol(
            torch.float32, scale=alone.abs().max(), upstream=forward_tol(2, 1)
        )
        torch.testing.assert_close(cols["acts"], alone.float(), **tol)
    cap.remove()
    # streamed top-k == brute force over the stored LoRA activations
    top, stats, sample = shard_summary(ss, "lora")
    feats = signed_features(data["acts"].float(), polarity)
    _check_topk(top, feats, data["doc"], data["pos"])
    # streamed random sample (merged over the shards) == brute force: per
    # feature its sample_k activating tokens of smallest priority, exactly
    assert sample.k == CFG["sample_k"] == manifest["meta"]["sample_k"]
    _check_sample(sample, feats, data["doc"], data["pos"])
    # The mean is summed in float64 and stored as float32: one rounding.
    want_F = feats.double().mean(0)
    torch.testing.assert_close(
        torch.tensor(stats.to_frame()["mean"].to_numpy()).double(),
        want_F,
        **rounding_tol(torch.float32, scale=feats.abs().max()),
    )
    # MLP: never stored, so compare with a recomputation of every doc
    mlp = MlpCapture(model, 3)
    run = lambda i, m: forward_batch(model, i, m, None, mlp)[1]  # noqa: E731
    by_doc = dict(
        iter_doc_values(dict(zip(range(10, 19), seqs, strict=True)), 50, run, "cpu")
    )
    mlp_TU = torch.cat([by_doc[10 + i] for i in range(len(seqs))])
    top, _, _ = shard_summary(ss, "mlp")
    # Recomputed in other batches: float64 values, each rounded to float32.
    tol = rounding_tol(
        torch.float32, scale=mlp_TU.abs().max(), upstream=forward_tol(2, 1)
    )
    feats = signed_features(mlp_TU, polarity)
    _check_topk(top, feats, data["doc"], data["pos"], tol)
    assert manifest["meta"]["mlp_layers"] == 2 and manifest["columns"][0] == "L0.q"


def test_rank4_scalars_are_the_module_input_dot_each_lora_a_row(tmp_path):
    """Issue 30: a rank-r adapter has r scalars per module, input . row s of
    lora_A. The shards of a rank-4 adapter hold, in the column named
    L{layer}.{module}#s, that dot product computed here by hand from the
    module's input (a plain forward, no capture) and lora_A's 4 rows."""
    r, seqs = 4, _seqs(4, seed=7)
    model = tiny_lora_f64(layers=2, seed=3, r=r)
    cfg = ExtractSettings.from_config({**CFG, "mlp_neurons_per_layer": 0})
    docs = [20 + i for i in range(len(seqs))]
    manifest = extract_to_shards(model, seqs, docs, tmp_path, cfg, "fp", "cpu")
    pairs = lora_modules(model)
    assert manifest["columns"] == [
        f"L{info.layer}.{info.module}#{s}" for info, _ in pairs for s in range(r)
    ]
    ss = open_shards(tmp_path)
    column = {name: c for c, name in enumerate(ss.columns)}
    for doc, cols in ss.iter_docs(docs):
        inputs, handles = {}, []
        for info, layer in pairs:
            hook = lambda m, a, name=info.name, seen=inputs: seen.__setitem__(  # noqa: E731
                name, a[0][0]
            )
            handles.append(layer.register_forward_pre_hook(hook))
        with torch.no_grad():
            model(input_ids=torch.tensor([seqs[doc - 20]]))
        for h in handles:
            h.remove()
        for info, layer in pairs:
            x_Td = inputs[info.name]  # [T, d_in] float64
            A_rd = layer.lora_A["default"].weight.detach()
            assert A_rd.shape == (r, info.d_in)
            for s in range(r):
                want_T = (x_Td * A_rd[s]).sum(-1)  # sum_j x_j A[s, j]
                got_T = cols["acts"][:, column[f"L{info.layer}.{info.module}#{s}"]]
                # the shard stores float32; the float64 value, rounded once
                tol = rounding_tol(
                    torch.float32, scale=want_T.abs().max(),
                    upstream=reorder_tol(F64, n=info.d_in, depth=1),
                )  # fmt: skip
                torch.testing.assert_close(got_T.double(), want_T, **tol)
                assert got_T.abs().max() > 0  # a real scalar, not a zero column


class Killed(Exception):
    pass


def test_kill_mid_shard_then_rerun_resumes_without_duplicates(tmp_path):
    seqs = _seqs(9, seed=6)
    _, clean = _run(tmp_path / "clean", seqs)
    seen = []

    def die(n):
        seen.append(n)
        if sum(seen) > 45:  # inside the third shard or so
            raise Killed

    with pytest.raises(Killed):
        _run(tmp_path / "run", seqs, on_tokens=die)
    shard_dir = tmp_path / "run" / "shards"
    assert not (tmp_path / "run" / "manifest.json").exists()
    done = sorted(shard_dir.glob("shard-*.json"))
    assert 0 < len(done) < len(clean["shards"])
    kept = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("shard-*")}
    counted = []
    _, resumed = _run(tmp_path / "run", seqs, on_tokens=counted.append)
    assert sum(counted) == clean["n_tokens"]  # progress counts kept shards once
    for name, mtime in kept.items():  # finished shards were not rewritten
        assert (shard_dir / name).stat().st_mtime_ns == mtime
    a = open_shards(tmp_path / "clean").load_all()
    b = open_shards(tmp_path / "run").load_all()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["sha256"] for r in resumed["shards"]] == [
        r["sha256"] for r in clean["shards"]
    ]


def test_corrupt_or_stale_shards_are_rewritten(tmp_path):
    seqs = _seqs(7, seed=7)
    _, first = _run(tmp_path, seqs)
    bad = tmp_path / "shards" / "shard-00001.safetensors"
    bad.write_bytes(b"garbage")
    _, again = _run(tmp_path, seqs)
    assert again["shards"][1]["sha256"] == first["shards"][1]["sha256"]
    open_shards(tmp_path)  # verifies every sha256
    # another setup (fingerprint) never reuses old shards
    _, other = _run(tmp_path, seqs, fp="fp2", dtype="bfloat16")
    assert open_shards(tmp_path).dtype == torch.bfloat16
    assert other["meta"]["fingerprint"] == "fp2"


def test_feature_tables_and_contexts_for_lora_and_mlp(tmp_path):
    import polars as pl

    from lorascope.activations.hooks import mlp_doc_values
    from lorascope.core.components import table_from_modules
    from lorascope.core.contexts import (
        ContextError,
        build_contexts,
        features_frame,
        lora_units,
        mlp_units,
    )

    seqs = _seqs(6, seed=8)
    model, manifest = _run(tmp_path, seqs)
    ss = open_shards(tmp_path)
    token_ids = {10 + i: s for i, s in enumerate(seqs)}
    decode = lambda ids: [f"<{t}>" for t in ids]  # noqa: E731
    comps = table_from_modules([info for info, _ in lora_modules(model)])
    mlp = MlpCapture(model, 3)
    kinds = {
        "lora": (
            lora_units(comps),
            lambda docs: ((d, c["acts"]) for d, c in ss.iter_docs(docs)),
        ),
        "mlp": (mlp_units(2, 3), mlp_doc_values(model, mlp, token_ids, 30, "cpu")),
    }
    for kind, (units, doc_values) in kinds.items():
        top, stats, _ = shard_summary(ss, kind)
        feats = features_frame(kind, units, "both", stats.to_frame())
        assert feats.height == 2 * units.height
        assert feats["label"][:2].to_list() == (
            ["L0.q+", "L0.q-"] if kind == "lora" else ["L0.mlp.0+", "L0.mlp.0-"]
        )
        assert feats["sign"][:2].to_list() == [1, -1]
        topk = top.to_frame()
        ctx = build_contexts(topk, token_ids, decode, doc_values, "both", 2)
        assert ctx.height == topk.height
        # lora: the stored values again; mlp: float64 recomputed in other
        # batches, rounded to float32 (tests/support/numerics.py).
        scale = float(topk["value"].abs().max())
        tol = rounding_tol(torch.float32, scale=scale, upstream=forward_tol(2, 1))
        for row in ctx.iter_rows(named=True):
            assert row["acts"][row["center"]] == pytest.approx(
                row["value"], rel=tol["rtol"], abs=tol["atol"]
            )
            assert len(row["tokens"]) == len(row["acts"]) <= 5
            ids = token_ids[row["doc"]]
            assert row["tokens"][row["center"]] == f"<{ids[row['pos']]}>"
        # a recomputation that does not reproduce the top-k fails loudly
        drift = lambda docs, dv=doc_values: ((d, v + 1.0) for d, v in dv(docs))  # noqa: E731
        with pytest.raises(ContextError, match="recomputed activation"):
            build_contexts(topk, token_ids, decode, drift, "both", 2)
    with pytest.raises(ContextError, match="not in the SFT table"):
        build_contexts(topk, {}, decode, kinds["mlp"][1], "both", 2)
    empty = build_contexts(topk.head(0), token_ids, decode, kinds["mlp"][1], "both", 2)
    assert empty.height == 0 and empty.schema["acts"] == pl.List(pl.Float32)


def test_unmeasurable_adapters_fail_clearly():
    model = add_random_lora(make_tiny_qwen(VOCAB, layers=1))
    model.merge_adapter()
    with pytest.raises(ExtractError, match="merged"):
        LoraCapture(model)
    model.unmerge_adapter()
    cap = LoraCapture(model)
    with pytest.raises(ExtractError, match="not run exactly once"):
        with cap.recording(torch.empty(1, 2, cap.n_components)):
            pass  # no forward: no module filled its columns


def test_stale_shards_of_a_longer_plan_are_removed(tmp_path):
    seqs = _seqs(9, seed=9)
    _, long_run = _run(tmp_path, seqs)
    _, short_run = _run(tmp_path, seqs[:3], fp="fp-short")
    n = len(short_run["shards"])
    assert n < len(long_run["shards"])
    assert sorted(p.name for p in (tmp_path / "shards").glob("shard-*.json")) == [
        f"shard-{i:05d}.json" for i in range(n)
    ]
    assert open_shards(tmp_path).n_tokens == sum(map(len, seqs[:3]))


def test_mlp_lora_switch_reads_the_other_model():
    """activations.mlp_lora: act_gate_up with the LoRA on equals the adapted
    MLP; up_proj with it off equals the base model's up_proj."""
    n = 3
    peft_model = tiny_lora_f64(layers=2, seed=3)
    ids, mask = pad_batch(_seqs(2), "cpu")
    on = MlpCapture(peft_model, n, "act_gate_up", lora=True)
    assert on.lora and not MlpCapture(peft_model, n, "act_gate_up").lora
    _, on_TU = forward_batch(peft_model, ids, mask, None, on, dtype=F64)
    on.remove()
    adapted = peft_model.get_base_model()
    hs = _mlp_inputs(adapted, ids, mask)  # LoRA on
    want = []
    for i, layer in enumerate(adapted.model.layers):
        m = layer.mlp  # PEFT-wrapped gate/up: their outputs carry the LoRA delta
        want.append((m.act_fn(m.gate_proj(hs[i])) * m.up_proj(hs[i]))[..., :n][mask])
    want_TU = torch.cat(want, dim=1)
    torch.testing.assert_close(on_TU, want_TU, **forward_tol(2, want_TU.abs().max()))
    off = MlpCapture(peft_model, n, "up_proj", lora=False)
    _, off_TU = forward_batch(peft_model, ids, mask, None, off, dtype=F64)
    base = make_tiny_qwen(VOCAB, layers=2).to(F64)  # same seed: unadapted weights
    hs = _mlp_inputs(base, ids, mask)
    want_TU = torch.cat(
        [layer.mlp.up_proj(hs[i])[..., :n][mask] for i, layer in enumerate(
            base.model.layers)], dim=1)  # fmt: skip
    torch.testing.assert_close(off_TU, want_TU, **forward_tol(2, want_TU.abs().max()))


def test_populations_modules_dominant_sign_and_real_contexts(tmp_path):
    """lora_modules, polarity dominant, min_activation and min_contexts each
    change the feature tables as documented (one extraction serves all)."""
    import polars as pl

    from lorascope.activations.populations import build_feature_tables
    from lorascope.core.components import table_from_modules
    from lorascope.core.contexts import lora_units, mlp_units

    seqs = _seqs(6, seed=8)
    model, manifest = _run(tmp_path, seqs, top_k=8, mlp_polarity="dominant")
    assert manifest["meta"]["mlp_polarity"] == "dominant"
    assert manifest["meta"]["polarity"] == "both" and not manifest["meta"]["mlp_lora"]
    ss = open_shards(tmp_path)
    tokens = {10 + i: s for i, s in enumerate(seqs)}
    act = dict(top_k=8, min_activation=0.0, min_contexts=0, context_width=2)

    def tables(kind, polarity, **over):
        top, stats, _ = shard_summary(ss, kind)
        units = (
            lora_units(table_from_modules([i for i, _ in lora_modules(model)]))
            if kind == "lora"
            else mlp_units(2, 3)
        )
        if kind == "lora":
            doc_values = lambda docs: ((d, c["acts"]) for d, c in ss.iter_docs(docs))  # noqa: E731
        else:
            from lorascope.activations.hooks import mlp_doc_values

            doc_values = mlp_doc_values(model, MlpCapture(model, 3), tokens, 30, "cpu")
        return build_feature_tables(
            kind, units, top, stats, polarity, {**act, **over},
            lambda docs: {d: tokens[d] for d in docs},
            lambda ids: [f"<{t}>" for t in ids], doc_values, "pop",
        )  # fmt: skip

    every, _, _ = tables("lora", "both")
    assert every.height == 2 * 7 * 2
    feats, topk, ctx = tables("lora", "both", lora_modules=["gate", "up", "down"])
    assert feats["label"].to_list()[:3] == ["L0.gate+", "L0.gate-", "L0.up+"]
    assert feats.height == 2 * 3 * 2 and feats["feature"].to_list() == list(range(12))
    assert set(feats["module"]) == {"gate", "up", "down"}
    # renumbered top-k rows still point at the right (streamed) values
    assert topk.select("feature", "rank", "value").equals(
        ctx.select("feature", "rank", "value"))  # fmt: skip
    kept = every.filter(pl.col("module").is_in(["gate", "up", "down"]))
    assert feats["max"].to_list() == kept["max"].to_list()
    # dominant: one feature per neuron, the side with the larger max
    both, _, _ = tables("mlp", "both")
    dom, dtopk, _ = tables("mlp", "dominant")
    assert dom.height == 2 * 3 and both.height == 12
    for u, row in enumerate(dom.iter_rows(named=True)):
        plus, minus = both["max"][2 * u], both["max"][2 * u + 1]
        assert row["sign"] == (1 if plus >= minus else -1)
        assert row["max"] == max(plus, minus)
    assert dtopk["value"].min() > 0
    # thresholds: only values above min_activation; marks below min_contexts
    all_f, all_t, _ = tables("lora", "both")
    hi = float(all_t["value"].median())
    thr_f, thr_t, thr_c = tables("lora", "both", min_activation=hi, min_contexts=3)
    assert thr_t["value"].min() > hi and thr_c.height == thr_t.height
    counts = thr_t.group_by("feature").len()
    n_of = dict(zip(counts["feature"], counts["len"], strict=True))
    assert thr_f["n_contexts"].to_list() == [n_of.get(f, 0) for f in range(28)]
    assert thr_f["few_contexts"].to_list() == [n_of.get(f, 0) < 3 for f in range(28)]
    assert thr_f["few_contexts"].any() and not all_f["few_contexts"].any()
    with pytest.raises(ValueError, match="min_contexts=9 exceeds"):
        tables("lora", "both", min_contexts=9)
    with pytest.raises(ValueError, match="unknown module"):
        tables("lora", "both", lora_modules=["mlp"])


def test_retrained_adapter_invalidates_shards(tmp_path, tiny_adapter_dir):
    """The shard fingerprint covers the adapter's weights: shards extracted
    with an adapter since retrained are never reused, while a copy of the
    same adapter (another path, a touch) keeps them (issue 33, item 15)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from lorascope.activations.extraction import fingerprint
    from lorascope.activations.shard_writer import valid_record, write_shard

    sft = tmp_path / "sft.parquet"
    sft.write_bytes(b"rows")
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    settings, model_cfg = {"dtype": "float32"}, {"dtype": "float32"}

    def fp(adapter_dir):
        return fingerprint(settings, adapter_dir, sft, "base", model_cfg)

    old = fp(adapter)
    n = 4
    write_shard(
        tmp_path / "shards", 0, torch.randn(n, 3), torch.zeros(n, dtype=torch.int64),
        torch.arange(n, dtype=torch.int32), torch.zeros(n, dtype=torch.int32),
        rows=(0, 1), fingerprint=old,
    )  # fmt: skip
    assert valid_record(tmp_path / "shards", 0, old, (0, 1)) is not None
    copy = tmp_path / "elsewhere"
    shutil.copytree(adapter, copy)
    assert fp(copy) == old  # same weights: the shards stand

    weights = adapter / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key] = tensors[key] + 1e-3  # retrained
    save_file(tensors, weights)
    new = fp(adapter)
    assert new != old
    assert valid_record(tmp_path / "shards", 0, new, (0, 1)) is None


# Tests added from mutation testing (`make mutation SESSIONS=hooks`).


def test_batches_are_greedy_longest_first_and_may_fill_the_budget():
    lengths = [5, 1, 9, 3, 3, 20, 2]
    # 20 alone (over budget); 9; 5 + 3 fills 2 x 5 = 10 exactly; 3 + 2 + 1.
    assert make_batches(lengths, 10) == [[5], [2], [0, 3], [4, 6, 1]]
    assert make_batches([4, 4, 4], 12) == [[0, 1, 2]]
    assert make_batches([], 10) == []


def test_pad_batch_right_pads_with_a_mask():
    ids, mask = pad_batch([[7, 8, 9], [5]], "cpu")
    assert ids.tolist() == [[7, 8, 9], [5, 0, 0]] and ids.dtype == torch.long
    assert mask.tolist() == [[True, True, True], [True, False, False]]


def test_iter_doc_values_gives_each_doc_its_own_rows():
    token_ids = {30: [1, 2, 3], 31: [4], 32: [5, 6, 7, 8, 9], 33: [10, 11]}

    def run(ids_BL, mask_BL):  # [T, 2]: the token id and its position
        pos = torch.arange(ids_BL.shape[1]).expand_as(ids_BL)
        return torch.stack([ids_BL[mask_BL], pos[mask_BL]], dim=1).double()

    got = dict(iter_doc_values(token_ids, 6, run, "cpu"))
    assert set(got) == set(token_ids)
    for doc, ids in token_ids.items():
        assert got[doc].dtype == torch.float32
        assert got[doc].tolist() == [[t, p] for p, t in enumerate(ids)]


def test_capture_columns_and_errors_name_the_modules():
    model = add_random_lora(make_tiny_qwen(VOCAB, layers=1), r=2)
    cap = LoraCapture(model)
    assert cap.columns[:4] == ["L0.q#0", "L0.q#1", "L0.k#0", "L0.k#1"]
    assert cap.n_components == 2 * 7 and len(cap.columns) == 14
    with pytest.raises(ExtractError) as err:
        with cap.recording(torch.empty(1, 2, cap.n_components)):
            pass  # no forward
    assert str(err.value) == (
        "LoRA modules not run exactly once: ['L0.q#0', 'L0.k#0', 'L0.v#0', "
        "'L0.o#0', 'L0.gate#0', 'L0.up#0', 'L0.down#0']"
    )
    one = LoraCapture(add_random_lora(make_tiny_qwen(VOCAB, layers=1)))
    assert one.columns[0] == "L0.q" and one.n_components == 7
    with pytest.raises(ExtractError) as err:
        MlpCapture(model, 2, "down_proj")
    assert str(err.value) == (
        "mlp_tensor must be one of ('act_gate_up', 'up_proj'): 'down_proj'"
    )
    width = model.get_base_model().model.layers[0].mlp.up_proj.out_features
    with pytest.raises(ExtractError) as err:
        MlpCapture(model, width + 1, "up_proj")
    assert str(err.value) == (
        f"activations.mlp_neurons_per_layer={width + 1} exceeds layer 0's MLP "
        f"width {width}"
    )
    model.merge_adapter()
    with pytest.raises(ExtractError) as err:
        LoraCapture(model)
    assert str(err.value) == (
        "model.layers.0.self_attn.q_proj: adapter is merged; unmerge first"
    )


def test_mlp_width_is_down_proj_input_for_act_gate_up():
    """act_gate_up reads down_proj's input (the intermediate width, 2 x the
    hidden size here): every unit of it can be recorded, one more cannot."""
    model = add_random_lora(make_tiny_qwen(VOCAB, layers=1, hidden=32))
    mlp = MlpCapture(model, 64, "act_gate_up")
    assert mlp.n_units == 64
    with pytest.raises(ExtractError, match="=65 exceeds layer 0's MLP width 64$"):
        MlpCapture(model, 65, "act_gate_up")
    assert MlpCapture(model, 64, "up_proj").n_units == 64  # up_proj's outputs


def test_backbone_of_peft_plain_and_bare_models():
    from lorascope.activations.hooks import _backbone

    plain = make_tiny_qwen(VOCAB, layers=1)
    assert _backbone(plain) is plain.model
    assert _backbone(add_random_lora(plain)) is plain.model
    stack = torch.nn.Module()  # neither a PEFT wrapper nor a transformers model
    assert _backbone(stack) is stack


def test_batches_and_doc_values_go_to_the_device_asked_for(monkeypatch):
    import lorascope.activations.hooks as hooks

    ids, mask = pad_batch([[1, 2], [3]], "meta")
    assert ids.device.type == mask.device.type == "meta"
    seen = []

    def run(ids_BL, mask_BL):  # meta tensors have no values: rows of zeros
        seen.append((ids_BL.device.type, mask_BL.device.type))
        return torch.zeros(ids_BL.numel(), 1)

    token_ids = {0: [1, 2, 3], 1: [4]}
    assert len(dict(iter_doc_values(token_ids, 4, run, "meta"))) == 2
    assert seen == [("meta", "meta")] * 2
    # mlp_doc_values sends its batches to its device too.
    seen.clear()
    monkeypatch.setattr(
        hooks, "forward_batch", lambda m, i, k, lora, mlp: (None, run(i, k))
    )
    doc_values = hooks.mlp_doc_values(None, None, token_ids, 4, "meta")
    assert [d for d, _ in doc_values([1])] == [1] and seen == [("meta", "meta")]


def test_every_pass_sees_the_padding_mask_and_builds_no_kv_cache():
    """The decoder runs with the batch's mask (as integers) and use_cache off:
    a KV cache for every layer would be built for nothing."""
    model = add_random_lora(make_tiny_qwen(VOCAB, layers=1))
    backbone = model.get_base_model().model
    calls = []
    backbone.register_forward_pre_hook(
        lambda m, args, kw: calls.append(kw), with_kwargs=True
    )
    ids, mask = pad_batch([[1, 2, 3], [4]], "cpu")
    # LoRA pass and the base-model MLP pass (act_gate_up: LoRA off).
    forward_batch(model, ids, mask, LoraCapture(model), MlpCapture(model, 2))
    assert len(calls) == 2
    for kw in calls:
        assert set(kw) == {"input_ids", "attention_mask", "use_cache"}
        assert kw["input_ids"] is ids and kw["use_cache"] is False
        assert kw["attention_mask"].dtype == torch.long
        assert kw["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_random_sample_contexts_are_checked_and_ranked_below_the_top_k(tmp_path):
    """activations.sample_k: the sampled tokens' windows join contexts.parquet
    (source sample, or both for a top-k token drawn too), ranked after the
    top-k; their centre values are checked like the top-k's (the MLP ones
    recomputed); sample_k 0 streams none."""
    import polars as pl

    from lorascope.activations.hooks import mlp_doc_values
    from lorascope.activations.populations import build_feature_tables
    from lorascope.core.components import table_from_modules
    from lorascope.core.contexts import ContextError, lora_units, mlp_units

    seqs = _seqs(8, seed=11)
    model, _ = _run(tmp_path / "on", seqs, top_k=3, sample_k=6)
    ss = open_shards(tmp_path / "on")
    tokens = {10 + i: s for i, s in enumerate(seqs)}
    act = dict(top_k=3, min_activation=0.0, min_contexts=0, context_width=2)
    units = {
        "lora": lora_units(table_from_modules([i for i, _ in lora_modules(model)])),
        "mlp": mlp_units(2, 3),
    }
    values = {
        "lora": lambda docs: ((d, c["acts"]) for d, c in ss.iter_docs(docs)),
        "mlp": mlp_doc_values(model, MlpCapture(model, 3), tokens, 30, "cpu"),
    }

    def tables(kind, doc_values, sample):
        top, stats, _ = shard_summary(ss, kind)
        return build_feature_tables(
            kind, units[kind], top, stats, "both", act,
            lambda docs: {d: tokens[d] for d in docs},
            lambda ids: [f"<{t}>" for t in ids], doc_values, "pop", sample,
        )  # fmt: skip

    for kind in ("lora", "mlp"):
        sample = shard_summary(ss, kind)[2]
        feats, topk, ctx = tables(kind, values[kind], sample)
        drawn = sample.to_frame()
        assert set(ctx["source"]) == {"top", "sample", "both"}
        keys = lambda df: set(df.select("feature", "doc", "pos").iter_rows())  # noqa: E731
        assert keys(ctx) == keys(topk) | keys(drawn)  # one row per token
        assert keys(ctx.filter(pl.col("source") != "top")) == keys(drawn)
        cols = ["feature", "rank", "value"]
        top_rows = ctx.filter(pl.col("source") != "sample").select(cols)
        assert top_rows.equals(topk.select(cols))
        for _, rows in ctx.group_by("feature"):
            rows = rows.sort("rank")
            assert rows["rank"].to_list() == list(range(rows.height))
            assert rows["value"].to_list() == sorted(rows["value"], reverse=True)
        tol = rounding_tol(torch.float32, scale=float(ctx["value"].abs().max()),
                           upstream=forward_tol(2, 1))  # fmt: skip
        for row in ctx.filter(pl.col("source") == "sample").iter_rows(named=True):
            assert row["acts"][row["center"]] == pytest.approx(
                row["value"], rel=tol["rtol"], abs=tol["atol"]
            )
        # a recomputation that drifts only at one sampled token fails loudly
        odd = ctx.filter(pl.col("source") == "sample").row(0, named=True)
        unit = odd["feature"] // 2

        def drift(docs, dv=values[kind], odd=odd, unit=unit):
            for d, v in dv(docs):
                if d == odd["doc"]:
                    v = v.clone()
                    v[odd["pos"], unit] += 10.0
                yield d, v

        with pytest.raises(ContextError, match="random-sample value"):
            tables(kind, drift, sample)
    # sample_k 0: nothing streamed, contexts are the top-k alone
    _run(tmp_path / "off", seqs, top_k=3, sample_k=0)
    off = open_shards(tmp_path / "off")
    assert off.meta["sample_k"] == 0 and shard_summary(off, "lora")[2] is None
    off.meta["sample_k"] = 6  # a manifest that promises a sample the shards lack
    with pytest.raises(ExtractError, match="no lora random sample"):
        shard_summary(off, "lora")
