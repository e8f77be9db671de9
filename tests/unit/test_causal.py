"""Issue 18 pieces around the feature-ablation KL: direct token effects, the
feature KL table, the causal figure and the dashboards' causal panels."""

from __future__ import annotations

import re

import figures_synth as S
import numpy as np
import polars as pl
import pytest
import torch
from test_ablation import tiny_lora

from lorascope.causal.direct_effects import (
    decoder_fingerprint,
    direct_effects,
    writes,
)
from lorascope.causal.feature_effects import feature_kl_table, lora_rows, sae_rows
from lorascope.causal.feature_kl import FeatureKL
from lorascope.core.components import lora_modules
from lorascope.core.config import schema_defaults
from lorascope.dashboards.build import DashboardOptions, KindTables, build_dashboards
from lorascope.dashboards.causal import CausalTables
from lorascope.figures.causal import causal_frame, plot_causal, rank_correlation
from lorascope.figures.style import FigureStyle


def test_writes_are_what_o_and_down_add_to_the_residual():
    model, table = tiny_lora()
    write_CD, writer_C = writes(model)
    assert writer_C.tolist() == table["module"].is_in(["o", "down"]).to_list()
    x = torch.randn(5, 16)
    for c, (info, layer) in enumerate(lora_modules(model)):
        if info.module != "o":  # o reads a hidden-size input
            continue
        scalar_T = layer.lora_A["default"](x)[:, 0]
        with torch.no_grad():
            added = layer(x) - layer.base_layer(x)
        torch.testing.assert_close(added, scalar_T[:, None] * write_CD[c])
    assert not write_CD[~writer_C].any()


def test_direct_effect_ranks_tokens_like_the_final_norm_and_unembedding():
    model, table = tiny_lora()
    write_CD, writer_C = writes(model)
    c = int(np.flatnonzero(writer_C)[0])
    keys = pl.DataFrame({"kind": ["lora", "lora"], "feature": [0, 1],
                         "label": ["a", "b"]})  # fmt: skip
    both_GD = torch.stack([write_CD[c], torch.zeros_like(write_CD[c])])
    base = model.get_base_model()
    norm_D, unembed_XD = base.model.norm.weight, base.lm_head.weight
    out = direct_effects(
        norm_D, unembed_XD, both_GD, keys, lambda ids: [f"t{i}" for i in ids], 5
    )
    assert out["feature"].unique().to_list() == [0]  # a zero write has no tokens
    with torch.no_grad():  # RMSNorm(w) = g * w / rms(w): same order as g * w
        logits = base.lm_head(base.model.norm(write_CD[c][None]))[0]
    want = torch.argsort(logits, descending=True)
    got = out.filter(pl.col("direction") == "promoted").sort("rank")["token_id"]
    assert got.to_list() == want[:5].tolist()
    low = out.filter(pl.col("direction") == "suppressed").sort("rank")["token_id"]
    assert low.to_list() == want.flip(0)[:5].tolist()


def _feature_kl():
    sae_features = pl.DataFrame({"feature": [0, 1], "label": ["sae.3", "sae.5"],
                                 "latent": [3, 5]})  # fmt: skip
    out = FeatureKL(
        kl_floor_GS=np.array([[0.1, 0.3], [0.0, 0.0]]),
        kl_full_GS=np.array([[0.2, 0.4], [0.05, 0.05]]),
        floor_S=np.array([0.05, 0.05]),
        tokens_S=np.array([10, 30]),
        mean_code_F=np.arange(6.0),
        frac_active_F=np.linspace(0, 1, 6),
    )
    lora_features = pl.DataFrame(
        {
            "feature": [0, 1, 2],
            "label": ["L0.o+", "L0.o-", "L1.down+"],
            "component": [3, 3, 13],
            "layer": [0, 0, 1],
            "module": ["o", "o", "down"],
            "frac_active": [0.5, 0.5, 0.2],
        }  # fmt: skip
    )
    kl_components = pl.DataFrame(
        {
            "index": [3, 13],
            "kl_mean": [0.7, 0.02],
            "kl_token_mean": [0.7, 0.02],
            "kl_sequence_mean": [0.6, 0.03],
            "kl_seq_sem": [0.1, 0.01],
            "n_sequences": [2, 2],
            "n_tokens": [40, 40],
        }  # fmt: skip
    )
    return (
        feature_kl_table(
            [
                lora_rows(lora_features, kl_components),
                sae_rows(sae_features, out, "tokens"),
            ]
        ),
        lora_features,
        kl_components,
    )


def test_feature_kl_table_pools_tokens_and_ranks_within_kind():
    df, lora_features, kl_components = _feature_kl()
    sae = df.filter(pl.col("kind") == "sae").sort("feature")
    np.testing.assert_allclose(sae["kl_mean"], [(0.1 * 10 + 0.3 * 30) / 40, 0.0])
    np.testing.assert_allclose(sae["kl_sequence_mean"], [0.2, 0.0])
    np.testing.assert_allclose(sae["kl_floor"], [0.05, 0.05])
    assert sae["mean_code"].to_list() == [3.0, 5.0]
    assert sae["kl_rank"].to_list() == [1, 2]
    lora = df.filter(pl.col("kind") == "lora").sort("feature")
    assert lora["kl_mean"].to_list() == [0.7, 0.7, 0.02]
    assert lora["kl_rank"].sort().to_list() == [1, 2, 3]
    with pytest.raises(ValueError, match=r"component\(s\) \[13\] not in"):
        lora_rows(lora_features, kl_components.filter(pl.col("index") == 3))


def test_rank_correlation_and_interval():
    x = np.arange(30.0)
    rho, lo, hi, n = rank_correlation(x, x**3, 200, 0)
    np.testing.assert_allclose([rho, lo, hi], 1.0, atol=1e-12)
    assert n == 30
    rng = np.random.default_rng(0)
    rho, lo, hi, n = rank_correlation(rng.random(200), rng.random(200), 300, 0)
    assert lo < rho < hi and lo < 0 < hi
    assert np.isnan(rank_correlation(np.ones(5), x[:5], 10, 0)[0])


def test_causal_figure_renders_with_stats(tmp_path):
    rng = np.random.default_rng(0)
    kl = pl.DataFrame(
        {
            "kind": ["lora"] * 21 + ["sae"] * 9,
            "feature": [*range(21), *range(9)],
            "kl_mean": rng.random(30),
        }  # fmt: skip
    )
    expl, scores = {}, {}
    for kind, n in (("lora", 21), ("sae", 9)):
        t = S.dashboard_kind(kind, n, rng)
        expl[kind], scores[kind] = t["explanations"], t["scores"]
    frame = causal_frame(kl, expl, scores)
    style = FigureStyle.from_config(schema_defaults("figures"))
    fig, stats = plot_causal(frame, ["lora", "sae"], style, 50, 0, "labels: x")
    fig.savefig(tmp_path / "f.png")
    assert stats.height == 4 and set(stats["against"]) == {"detection", "class"}
    assert (tmp_path / "f.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="no rows of kind 'sae'"):
        causal_frame(kl.filter(pl.col("kind") == "lora"), expl, scores)


def test_dashboards_show_causal_panels(tmp_path):
    rng = np.random.default_rng(0)
    kinds = {
        "lora": KindTables(**S.dashboard_kind("lora", 3, rng)),
        "sae": KindTables(**S.dashboard_kind("sae", 2, rng)),
    }
    kinds["lora"].features = kinds["lora"].features.with_columns(component=3)
    kl, _, _ = _feature_kl()
    comps = pl.DataFrame({"index": range(14), "layer": [i // 7 for i in range(14)],
                          "module": ["q", "k", "v", "o", "gate", "up", "down"] * 2,
                          "rank_slot": [0] * 14})  # fmt: skip
    dir_FC = torch.zeros(6, 14)
    dir_FC[3, 3], dir_FC[3, 13] = 1.0, -0.5
    fingerprint = decoder_fingerprint(
        pl.DataFrame({"feature": [0, 1], "latent": [3, 5]}), dir_FC, comps
    )
    effects = pl.DataFrame(
        {
            "kind": ["sae", "sae"],
            "feature": [0, 0],
            "label": ["sae.3"] * 2,
            "direction": ["promoted", "suppressed"],
            "rank": [0, 0],
            "token_id": [1, 2],
            "token": ["Wait", "so"],
            "logit": [1.0, -1.0],
        }  # fmt: skip
    )
    accuracy = pl.DataFrame(
        {
            "benchmark": ["toy_add2"] * 2,
            "kind": ["sae", "component"],
            "feature": [0, None],
            "component": [None, 3],
            "accuracy": [0.5, 0.25],
            "delta": [-0.125, -0.5],
            "delta_lo": [-0.25, -0.75],
            "delta_hi": [0.0, -0.25],
            "reference": ["floor", "full"],
            "n": [32, 32],
        }
    )
    causal = CausalTables(kl, effects, fingerprint, accuracy)
    options = DashboardOptions.from_config(schema_defaults("figures")["dashboards"])
    build_dashboards(kinds, tmp_path / "d", "labels: x", options, causal=causal)
    page = (tmp_path / "d" / "features" / "sae-0.html").read_text()
    assert 'id="ablation-kl">0.25 (rank 1' in page
    assert (
        'id="ablation-accuracy">0.5 on toy_add2 (n = 32): -0.125 [-0.250, +0.000] '
        "vs the SAE reconstruction" in page
    )
    # no accuracy measured for sae feature 1: no row
    sae_1 = (tmp_path / "d" / "features" / "sae-1.html").read_text()
    assert "ablation-accuracy" not in sae_1
    assert 'tok-up">Wait<' in page and 'tok-down">so<' in page
    assert len(re.findall(r"<rect [^>]*fill=", page)) == 14  # 2 layers x 7 modules
    assert "L1.down: -0.5" in page and "L0.o: 1<" in page
    lora_page = (tmp_path / "d" / "features" / "lora-0.html").read_text()
    assert (
        'id="ablation-kl">0.7' in lora_page
        and "svg class='fingerprint'" not in lora_page
    )
    # a LoRA direction shows its component's ablation accuracy
    assert 'id="ablation-accuracy">0.25 on toy_add2' in lora_page
    assert "vs the full LoRA" in lora_page
    index = (tmp_path / "d" / "index.html").read_text()
    assert 'data-key="kl"' in index and 'data-kl="0.7"' in index
    with pytest.raises(ValueError, match=r"direct_effects\.parquet.*token"):
        CausalTables(kl, effects.drop("token"), fingerprint)


def test_dashboards_name_the_directions_of_a_rank2_adapter(tmp_path):
    """Issue 30: a rank-2 LoRA direction's page says which row of lora_A it
    is, and an SAE feature's decoder map shows each direction apart (a
    module's directions are unrelated axes: summing their weights, as a
    rank-1 cell does, would cancel +1 and -1 to 0)."""
    rng = np.random.default_rng(0)
    kinds = {
        "lora": KindTables(**S.dashboard_kind("lora", 2, rng)),
        "sae": KindTables(**S.dashboard_kind("sae", 2, rng)),
    }
    kinds["lora"].features = kinds["lora"].features.with_columns(
        label=pl.Series(["L0.q#0+", "L0.q#1-"]), module=pl.lit("q"), component=1
    )
    kl, _, _ = _feature_kl()
    comps = pl.DataFrame({"index": range(28), "layer": [i // 14 for i in range(28)],
                          "module": [m for m in ["q", "k", "v", "o", "gate", "up",
                                                 "down"] for _ in (0, 1)] * 2,
                          "rank_slot": [0, 1] * 14})  # fmt: skip
    dir_FC = torch.zeros(6, 28)
    dir_FC[3, 0], dir_FC[3, 1], dir_FC[3, 27] = 1.0, -1.0, 0.5
    fingerprint = decoder_fingerprint(
        pl.DataFrame({"feature": [0, 1], "latent": [3, 5]}), dir_FC, comps
    )
    effects = pl.DataFrame(
        {"kind": ["sae"], "feature": [0], "label": ["sae.3"], "direction": ["promoted"],
         "rank": [0], "token_id": [1], "token": ["Wait"], "logit": [1.0]}
    )  # fmt: skip
    options = DashboardOptions.from_config(schema_defaults("figures")["dashboards"])
    causal = CausalTables(kl, effects, fingerprint)
    build_dashboards(kinds, tmp_path / "d", "labels: x", options, causal=causal)
    page = (tmp_path / "d" / "features" / "sae-0.html").read_text()
    assert len(re.findall(r"<rect [^>]*fill=", page)) == 28  # one per direction
    assert "L0.q#0: 1<" in page and "L0.q#1: -1<" in page and "L1.down#1: 0.5<" in page
    assert "L0.q: " not in page  # no summed cell
    lora_1 = (tmp_path / "d" / "features" / "lora-1.html").read_text()
    assert "<th>layer / module / direction</th>" in lora_1
    assert 'id="direction">0 / q / 1 (row 1 of the module' in lora_1
    assert "LoRA with this direction's scalar (its module's other directions" in lora_1
    assert (
        'id="direction">0 / q / 0 (row 0'
        in (tmp_path / "d" / "features" / "lora-0.html").read_text()
    )
