"""Cross-layer BatchTopK SAE (the default sae.architecture): config, data
stream, training, round trip, recovery. Other architectures:
test_sae_architectures.py."""

from __future__ import annotations

import dataclasses
import json
import math

import polars as pl
import pytest
import torch
import yaml
from numerics import reorder_tol, unit_roundoff
from shardfiles import write_doc_shards

from lorascope.core import contexts as ctx
from lorascope.core.config import SCHEMA_PATH
from lorascope.core.saes import load_sae
from lorascope.core.sample import token_priority
from lorascope.core.topk import FeatureStats
from lorascope.sae.config import SaeConfig
from lorascope.sae.evaluation import evaluate_sae
from lorascope.sae.features import POLARITY, doc_values_fn, sae_feature_tables
from lorascope.sae.training import (
    save_sae,
    shuffled_batches,
    train_on_shards,
    train_sae,
)

D_IN, N_ATOMS, K = 32, 48, 3


def sparse_dictionary_data(n, d=D_IN, n_atoms=N_ATOMS, k=K, noise=0.01, seed=0):
    """Rows = sum of k random unit atoms with weights in [0.5, 1.5] + noise."""
    g = torch.Generator().manual_seed(seed)
    atoms_AD = torch.randn(n_atoms, d, generator=g)
    atoms_AD /= atoms_AD.norm(dim=1, keepdim=True)
    idx_NK = torch.rand(n, n_atoms, generator=g).argsort(1)[:, :k]
    coef_NA = torch.zeros(n, n_atoms).scatter(
        1, idx_NK, 0.5 + torch.rand(n, k, generator=g)
    )
    x_ND = coef_NA @ atoms_AD + noise * torch.randn(n, d, generator=g)
    return x_ND, atoms_AD


def matched_fraction(atoms_AD, W_dec_FD, min_cos=0.9):
    W = W_dec_FD / W_dec_FD.norm(dim=1, keepdim=True)
    return float(((atoms_AD @ W.T).max(1).values >= min_cos).float().mean())


@torch.no_grad()
def clear_of_threshold(sae, x_ND, slack=4.0):
    """Rows whose every JumpReLU pre-activation is farther from the threshold
    than float32 rounding can move it, so every CPU gates them alike.

    One dot product of length n is off by at most n u sum|x_i w_i|
    (tests/support/numerics.py); `slack` covers the few extra roundings of input
    processing and of weights folded differently (saved vs training SAE).
    A row with an entry inside that band may flip a latent on one machine
    and not on another: such rows (a handful) are left out of exact checks.
    """
    x = sae.process_sae_in(x_ND.double().to(sae.W_enc.dtype)).double()
    w, b = sae.W_enc.double(), sae.b_enc.double()
    pre_NF = x @ w + b
    band_NF = (
        slack * D_IN * unit_roundoff(torch.float32) * (x.abs() @ w.abs() + b.abs())
    )
    return ((pre_NF - sae.threshold.double()).abs() > band_NF).all(1)


def clear_rows(sae, x_ND, n):
    """The first n rows of x_ND that are clear of the threshold (most are)."""
    keep_N = clear_of_threshold(sae, x_ND)
    assert keep_N.float().mean() > 0.95, "test data sits on the threshold"
    return x_ND[keep_N][:n]


def epochs_of(x_ND, chunk=1000):
    def make_epoch(e):
        perm = torch.randperm(len(x_ND), generator=torch.Generator().manual_seed(e))
        return x_ND[perm].split(chunk)

    return make_epoch


def recovery_cfg(**kw):
    base = dict(
        k=K, expansion=4, lr=3e-3, batch_size=512, epochs=25, seed=0,
        dead_feature_window=50, shuffle_buffer_tokens=0, device="cpu", log_every=100,
    )  # fmt: skip
    return SaeConfig.from_config({"sae": base | kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One SAE trained on known-dictionary data (about 5 s on one CPU thread)."""
    torch.set_num_threads(1)
    x_ND, atoms_AD = sparse_dictionary_data(20_000)
    cfg = recovery_cfg()
    batches = shuffled_batches(epochs_of(x_ND), cfg.batch_size, 0, cfg.seed)
    result = train_sae(cfg, batches, D_IN, len(x_ND))
    model_dir = tmp_path_factory.mktemp("sae") / "model"
    save_sae(result.sae, model_dir)
    return dict(x=x_ND, atoms=atoms_AD, result=result, dir=model_dir, cfg=cfg)


def test_decoder_recovers_true_atoms(trained):
    loaded = load_sae(trained["dir"])
    W_dec_FD = loaded.W_dec.detach()
    assert loaded.cfg.d_sae == 4 * D_IN
    assert matched_fraction(trained["atoms"], W_dec_FD) >= 0.8
    # The check is not vacuous: a random dictionary of the same size fails it.
    random_FD = torch.randn(W_dec_FD.shape, generator=torch.Generator().manual_seed(1))
    assert matched_fraction(trained["atoms"], random_FD) < 0.1


def test_round_trip_encodings_match_reference(trained):
    """load_from_disk gives a JumpReLU SAE whose codes equal those computed by
    hand from the training SAE's weights and learned BatchTopK threshold."""
    sae = trained["result"].sae
    x_BD = clear_rows(load_sae(trained["dir"]), trained["x"][:2500], 2000)
    with torch.no_grad():
        norm_F = sae.W_dec.norm(dim=-1)
        pre_BF = ((x_BD - sae.b_dec) @ sae.W_enc + sae.b_enc) * norm_F
        thr = float(sae.topk_threshold)
        ref_BF = pre_BF.relu() * (pre_BF > thr)
        ref_recon_BD = (ref_BF / norm_F) @ sae.W_dec + sae.b_dec
        loaded = load_sae(trained["dir"])
        acts_BF = loaded.encode(x_BD)
        # float32, folded vs unfolded weights: a few reductions of length D_IN.
        tol = reorder_tol(torch.float32, n=D_IN, depth=4, scale=ref_BF.abs().max())
        torch.testing.assert_close(acts_BF, ref_BF, **tol)
        tol = reorder_tol(
            torch.float32, n=4 * D_IN, depth=6, scale=ref_recon_BD.abs().max()
        )
        torch.testing.assert_close(loaded.decode(acts_BF), ref_recon_BD, **tol)
        again = load_sae(trained["dir"]).encode(x_BD)
    assert torch.equal(again, acts_BF)  # same model, same input: bitwise
    assert loaded.cfg.architecture() == "jumprelu"


def test_mean_l0_is_k_on_training_data(trained):
    m = evaluate_sae(load_sae(trained["dir"]), trained["x"].split(4096))
    assert abs(m["mean_l0"] - K) / K < 0.2, m["mean_l0"]
    assert m["fvu"] < 0.1
    # alive latents ~ the true dictionary; dead ones are reported as such
    assert 0.8 * N_ATOMS <= m["alive_count"] <= 2 * N_ATOMS
    assert m["dead_fraction"] == pytest.approx(1 - m["alive_count"] / (4 * D_IN))
    curve = trained["result"].curve
    assert curve[0]["step"] == 0 and curve[-1]["fvu"] < curve[0]["fvu"] / 5
    assert curve[-1]["samples"] == trained["result"].n_samples


def test_evaluate_matches_naive_formulas(trained):
    sae = load_sae(trained["dir"])
    x_BD = clear_rows(sae, trained["x"][:3500], 3000)  # batches of 700 vs all
    m = evaluate_sae(sae, x_BD.split(700), dead_frac_threshold=0.01)
    with torch.no_grad():
        acts = sae.encode(x_BD)
        recon = sae.decode(acts)
    x, r = x_BD.double(), recon.double()
    fvu = float((x - r).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    # Reconstructions agree to float32 reordering; fvu is a ratio of sums of
    # their squares, so its relative error is about twice theirs.
    rel = reorder_tol(torch.float32, n=4 * D_IN, depth=4)["rtol"]
    assert m["fvu"] == pytest.approx(fvu, rel=2 * rel / fvu)
    assert m["mean_l0"] == pytest.approx(float((acts != 0).sum(1).double().mean()))
    frac = (acts != 0).double().mean(0)
    assert m["alive_latents"] == (frac > 0.01).nonzero().flatten().tolist()
    assert m["n_tokens"] == 3000


def _write_shards(root, x_ND, n_shards=4, doc_len=50):
    """Shards of whole documents (as the extractor writes them)."""
    return write_doc_shards(root, x_ND, n_shards, doc_len)


def test_train_on_shards_end_to_end(tmp_path):
    torch.set_num_threads(1)
    x_ND, atoms_AD = sparse_dictionary_data(8000, seed=3)
    shards = _write_shards(tmp_path / "acts", x_ND)
    cfg = recovery_cfg(epochs=20, shuffle_buffer_tokens=4000, log_every=10)
    metrics = train_on_shards(shards, cfg, tmp_path / "model")
    json.dumps(metrics)  # metrics.json must be plain JSON
    assert metrics["n_tokens"] == 8000 and metrics["d_sae"] == 4 * D_IN
    assert metrics["n_training_samples"] == 20 * 8000 // 512 * 512
    assert metrics["fvu"] < 0.2 and abs(metrics["mean_l0"] - K) < 1.0
    assert len(metrics["alive_latents"]) == metrics["alive_count"] > 0
    assert len(metrics["curve"]) >= 30
    loaded = load_sae(tmp_path / "model")
    assert matched_fraction(atoms_AD, loaded.W_dec.detach()) >= 0.6


def test_shuffled_batches_full_and_cover_each_epoch():
    x_N1 = torch.arange(1000, dtype=torch.float32)[:, None]
    stream = shuffled_batches(epochs_of(x_N1, chunk=130), 100, 0, seed=0)
    seen = torch.cat([next(stream) for _ in range(10)])  # exactly one epoch
    assert sorted(seen.flatten().tolist()) == list(range(1000))
    mixed = shuffled_batches(lambda e: x_N1.split(100), 100, 400, seed=0)
    first = next(mixed)
    assert first.shape == (100, 1)
    assert first.max() >= 100  # rows from later chunks reached the first batch
    for _ in range(30):  # across epoch boundaries every batch is still full
        assert next(mixed).shape == (100, 1)


def test_empty_data_fails_clearly(trained):
    with pytest.raises(ValueError, match="no rows in epoch 0"):
        next(shuffled_batches(lambda e: iter([]), 10))
    with pytest.raises(ValueError, match="^evaluate_sae: the activation data yielded"):
        evaluate_sae(load_sae(trained["dir"]), [])


def test_too_few_tokens_fails_naming_key():
    cfg = recovery_cfg(batch_size=4096, epochs=1)
    with pytest.raises(ValueError, match="sae.batch_size=4096"):
        train_sae(cfg, iter([]), D_IN, n_tokens=1000)


def test_lr_warmup_steps_ramp_the_learning_rate():
    """sae.lr_warmup_steps (the public code: 100) reaches SAELens's scheduler:
    a linear ramp to lr, then constant."""
    import torch
    from sae_lens.training.optim import get_lr_scheduler

    from lorascope.sae.training import trainer_config

    cfg = SaeConfig.from_config({"sae": {"lr": 5e-4, "lr_warmup_steps": 100}})
    tc = trainer_config(cfg, 512 * 400, "cpu")
    assert (tc.lr_warm_up_steps, tc.lr) == (100, 5e-4)
    default = SaeConfig.from_config({})
    assert trainer_config(default, 512 * 400, "cpu").lr_warm_up_steps == 0
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=tc.lr)
    sched = get_lr_scheduler(
        tc.lr_scheduler_name, lr=tc.lr, optimizer=opt,
        warm_up_steps=tc.lr_warm_up_steps, decay_steps=tc.lr_decay_steps,
        training_steps=tc.total_training_steps, lr_end=tc.lr_end,
        num_cycles=tc.n_restart_cycles,
    )  # fmt: skip
    lrs = []
    for _ in range(150):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(5e-6) and lrs[50] < lrs[98]
    assert lrs[99:] == pytest.approx([5e-4] * 51)
    with pytest.raises(ValueError, match="sae.lr_warmup_steps=400 is not below"):
        trainer_config(
            SaeConfig.from_config({"sae": {"lr_warmup_steps": 400}}), 512 * 400, "cpu"
        )


def test_load_missing_model_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_sae(tmp_path / "nothing_here")


@pytest.mark.parametrize(
    "field,value",
    [("k", 0), ("expansion", 0), ("lr", -1.0), ("batch_size", 0), ("epochs", 0),
     ("normalize", "zscore"), ("dead_frac_threshold", 1.0), ("log_every", 0),
     ("shuffle_buffer_tokens", -1), ("dead_feature_window", 0),
     ("lr_warmup_steps", -1), ("architecture", "gated"),
     ("matryoshka_fractions", [0.5, 1.0])],
)  # fmt: skip
def test_config_rejects_bad_values_naming_field(field, value):
    """from_config checks the section against the schema (its bounds)."""
    with pytest.raises(ValueError, match=f"sae.{field}"):
        SaeConfig.from_config({"sae": {field: value}})


def test_config_from_config_inherits_and_rejects_unknown():
    cfg = SaeConfig.from_config(
        {"seed": 7, "device": "cpu", "sae": {"seed": None, "device": None, "k": 2}}
    )
    assert (cfg.seed, cfg.device, cfg.k) == (7, "cpu", 2)
    with pytest.raises(ValueError, match="sae: unknown keys \\['topk'\\]"):
        SaeConfig.from_config({"sae": {"topk": 3}})


def test_defaults_come_from_the_schema():
    with open(SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)["properties"]
    props = schema["sae"]["properties"]
    fields = dataclasses.fields(SaeConfig)
    assert set(props) == {f.name for f in fields}
    assert all(f.default is dataclasses.MISSING for f in fields)  # none repeated
    cfg = dataclasses.asdict(SaeConfig.from_config({}))
    for name, spec in props.items():
        # null = inherit the top-level key (its own default here)
        want = schema[name]["default"] if spec["default"] is None else spec["default"]
        assert cfg[name] == want, name
    assert cfg["architecture"] == "batchtopk"


# --- SAE features from the shards (rule sae_features) ---


def test_sae_feature_tables_match_brute_force(trained, tmp_path):
    sae = load_sae(trained["dir"])
    x_ND = clear_rows(sae, trained["x"][:3500], 3000)  # batches of 700 vs all
    shards = _write_shards(tmp_path / "acts", x_ND, n_shards=3, doc_len=60)
    with torch.no_grad():
        codes_NL = sae.encode(x_ND)
    alive = (codes_NL != 0).any(0).nonzero().flatten().tolist()[:-1]  # a subset
    features, topk, sample = sae_feature_tables(
        sae, shards, alive, k=5, batch_size=700, sample_k=6
    )

    assert features["feature"].to_list() == list(range(len(alive)))
    assert features["latent"].to_list() == alive
    assert features["label"].to_list() == [f"sae.{u}" for u in alive]
    assert set(features["kind"]) == {"sae"} and set(features["sign"]) == {1}
    lora_like = ctx.features_frame(
        "lora",
        ctx.sae_units(2),
        "pos",
        FeatureStats(2).to_frame(),
    )
    assert features.schema == lora_like.schema  # one table format for all kinds
    codes_NF = codes_NL[:, alive]
    # Every row is clear of the threshold: the same latents fire in any batch.
    assert features["frac_active"].to_list() == (
        (codes_NF > 0).float().mean(0).tolist()
    )
    # Per feature: its (at most) 5 largest codes that fired, nothing else.
    tol = reorder_tol(torch.float32, n=D_IN, depth=2, scale=codes_NF.abs().max())
    for f in range(len(alive)):
        fired = codes_NF[:, f][codes_NF[:, f] > 0]
        best = fired.topk(min(5, len(fired))).values
        got = topk.filter(pl.col("feature") == f).sort("rank")["value"].to_list()
        torch.testing.assert_close(torch.tensor(got), best, **tol)
    # The random sample: per feature, its 6 fired tokens of smallest priority
    # (brute force over every token; doc = n // 60, pos = n % 60).
    n_T = torch.arange(codes_NF.shape[0])
    prio_T = token_priority(n_T // 60, n_T % 60)
    for f in range(len(alive)):
        fired = torch.nonzero(codes_NF[:, f] > 0).flatten()
        want = fired[torch.argsort(prio_T[fired])[:6]].tolist()
        got = sample.filter(pl.col("feature") == f)
        assert sorted(d * 60 + p for d, p in got.select("doc", "pos").iter_rows()) == (
            sorted(want)
        )
    high = float(topk["value"].median())
    _, above, none = sae_feature_tables(sae, shards, alive, 5, 700, min_activation=high)
    assert above["value"].min() > high and above.height < topk.height
    assert none is None  # sample_k 0: no sample
    # (doc, pos) of each top-k row points at the token with that value
    row = topk.row(0, named=True)
    n = row["doc"] * 60 + row["pos"]
    assert float(codes_NF[n, row["feature"]]) == pytest.approx(
        row["value"], rel=tol["rtol"], abs=tol["atol"]
    )

    token_ids = {d: list(range(60)) for d in range(50)}
    contexts = ctx.build_contexts(
        topk,
        token_ids,
        lambda ids: [f"t{i}" for i in ids],
        doc_values_fn(sae, shards, alive),
        POLARITY,
        width=3,
        sample=sample,
    )
    # one row per top-k or sampled token; the centre check covered both
    keys = {(f, d, p) for f, d, p in topk.select("feature", "doc", "pos").iter_rows()}
    keys |= {
        (f, d, p) for f, d, p in sample.select("feature", "doc", "pos").iter_rows()
    }
    assert contexts.height == len(keys) > topk.height
    assert set(contexts["source"]) == {"top", "sample", "both"}
    assert contexts.filter(pl.col("source") != "sample").height == topk.height
    for r in contexts.iter_rows(named=True):
        assert r["acts"][r["center"]] == pytest.approx(
            r["value"], rel=tol["rtol"], abs=tol["atol"]
        )
        assert r["tokens"][r["center"]] == f"t{r['pos']}"


def test_sae_features_fail_clearly(trained, tmp_path):
    sae = load_sae(trained["dir"])
    shards = _write_shards(tmp_path / "acts", torch.randn(200, D_IN + 1))
    with pytest.raises(ValueError, match="33 components but the SAE was trained"):
        sae_feature_tables(sae, shards, [0, 1], k=3)
    with pytest.raises(ValueError, match="every SAE latent is dead"):
        sae_feature_tables(sae, shards, [], k=3)
    with pytest.raises(ValueError, match="out of range"):
        sae_feature_tables(sae, shards, [4 * D_IN], k=3)


# Tests added from mutation testing (`make mutation SESSIONS=sae_evaluation`).


def test_evaluate_reports_every_metric_from_its_definition(trained):
    """metrics.json's other fields, each from its definition; float64 input is
    evaluated as the float32 the SAE runs in; constant data has no FVU."""
    sae = load_sae(trained["dir"])
    x_BD = clear_rows(sae, trained["x"][:2000], 1500)
    m = evaluate_sae(sae, x_BD.double().split(400))  # last batch shorter
    with torch.no_grad():
        acts = sae.encode(x_BD)
        recon = sae.decode(acts)
    err = float((recon.double() - x_BD.double()).pow(2).sum())
    rel = reorder_tol(torch.float32, n=4 * D_IN, depth=4)["rtol"]
    # as for fvu above: float32 reconstructions, a sum of their squared errors
    assert m["mse_per_token"] == pytest.approx(err / 1500, rel=2 * rel / m["fvu"])
    assert (m["n_tokens"], m["d_in"], m["d_sae"]) == (1500, D_IN, 4 * D_IN)
    frac_F = (acts != 0).double().mean(0)
    assert m["frac_active"] == pytest.approx(frac_F.tolist(), abs=1e-12)
    alive_F = frac_F > 0  # threshold 0: a latent that fired once is alive
    assert m["alive_count"] == int(alive_F.sum()) < 4 * D_IN
    assert m["dead_fraction"] == pytest.approx(1 - float(alive_F.double().mean()))
    assert m["alive_latents"] == alive_F.nonzero().flatten().tolist()
    flat = evaluate_sae(sae, [torch.ones(3, D_IN)])
    assert math.isnan(flat["fvu"]) and flat["n_tokens"] == 3


def test_fvu_of_offset_low_variance_data_over_batches(trained):
    """FVU's denominator is the variance about the mean of every batch
    together: data far from 0 with a total variance below 1, in three
    batches, needs the running sum over all batches in float64 (a float32
    sum, or the last batch's mean, misses by far more than the tolerance)."""
    sae = load_sae(trained["dir"])
    x_BD = 100.0 + 0.01 * torch.randn(
        300, D_IN, generator=torch.Generator().manual_seed(3)
    )
    m = evaluate_sae(sae, x_BD.split(100))
    with torch.no_grad():
        recon = torch.cat([sae.decode(sae.encode(b)) for b in x_BD.split(100)])
    x = x_BD.double()
    total_var = float((x - x.mean(0)).pow(2).sum())
    assert 0 < total_var < 1
    assert m["fvu"] == pytest.approx(
        float((x - recon.double()).pow(2).sum()) / total_var, rel=1e-6
    )


def test_float64_input_is_scored_as_the_float32_the_sae_encodes():
    """The metrics describe what the SAE sees: an SAE that reconstructs its
    float32 input exactly (codes relu(x), relu(-x), decoded as their
    difference: every product is by 0 or 1) has FVU and error exactly 0 on
    float64 data, although the data's float64 digits below float32 resolution
    are not reconstructed (measured against them, the error would be > 0)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    d = 8
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        for p in (sae.b_enc, sae.b_dec, sae.threshold):
            p.zero_()
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    x_ND = torch.randn(60, d, generator=torch.Generator().manual_seed(0)).double()
    x_ND += 1e-3 * torch.rand(60, d, generator=torch.Generator().manual_seed(1))
    assert (x_ND != x_ND.float().double()).all()  # float64 digits float32 drops
    m = evaluate_sae(sae, x_ND.split(25))
    assert (m["fvu"], m["mse_per_token"]) == (0.0, 0.0)
    assert (m["mean_l0"], m["n_tokens"], m["alive_count"]) == (d, 60, 2 * d)


def test_batches_move_to_the_sae_device():
    """Host batches go to the SAE's device before encoding (a CUDA SAE gets
    CPU shards). Checked on any machine with a `meta` SAE, which refuses host
    inputs as CUDA does (tests/unit/test_devices.py): the batch gets through
    encode and decode, and the run stops only where a number is read back,
    which a meta tensor does not hold. A batch left on the host fails in
    encode instead, naming the devices."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=8, d_sae=16)).to(torch.device("meta"))
    with pytest.raises(RuntimeError) as err:
        sae.encode(torch.randn(5, 8))  # the harness: host input is refused
    assert "device" in str(err.value)
    with pytest.raises(RuntimeError, match="meta tensors"):
        evaluate_sae(sae, [torch.randn(5, 8)])
