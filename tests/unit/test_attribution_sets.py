"""Behaviour sets (issue 28): removing the whole set is the zero-scalar run,
adding the whole set alone is the floor, the random control draws only
features that fire, and the paired table's deltas."""

import numpy as np
import polars as pl
import pytest
import torch
from figures_artifacts import beyond_paper_tables
from test_ablation import tiny_lora
from test_feature_ablation import D_SAE, random_sae
from test_feature_accuracy import _generate, _prompts

from lorascope.ablation.scalar_control import ScalarControl, lora_layers
from lorascope.attribution.sets import FeatureSet, choose_sets, set_edit, sets_table
from lorascope.causal.feature_accuracy import CleanScalars, sae_edit
from lorascope.causal.feature_kl import SaeMap

EVERY = tuple(range(D_SAE))


def test_removing_the_whole_set_generates_as_the_zero_scalar_run():
    model, table = tiny_lora(dtype=torch.float64)
    sae_map = SaeMap(random_sae(table.height, zero_bias=True), torch.float64)
    _, ids_BT, mask_BT = _prompts()
    with ScalarControl(lora_layers(model)) as control:
        with CleanScalars(model, control, set_edit(sae_map, EVERY, keep_rest=True)):
            removed_BN = _generate(model, ids_BT, mask_BT)
        control.mult_VC = torch.zeros(1, table.height, dtype=torch.float64)
        zero_BN = _generate(model, ids_BT, mask_BT)
        control.clear()
        full_BN = _generate(model, ids_BT, mask_BT)
        with CleanScalars(model, control, set_edit(sae_map, EVERY, keep_rest=False)):
            alone_BN = _generate(model, ids_BT, mask_BT)
        with CleanScalars(model, control, sae_edit(sae_map, None)):
            floor_BN = _generate(model, ids_BT, mask_BT)
    assert torch.equal(removed_BN, zero_BN)
    assert not torch.equal(zero_BN, full_BN)  # the scalars matter here
    assert torch.equal(alone_BN, floor_BN)  # the whole set alone = the floor


def test_the_set_edits_split_the_reconstruction():
    _, table = tiny_lora(dtype=torch.float64)
    sae_map = SaeMap(random_sae(table.height), torch.float64)
    scalars = torch.randn(2, 5, table.height, dtype=torch.float64)
    some = (1, 4)
    rest = set_edit(sae_map, some, keep_rest=True)(scalars)
    part = set_edit(sae_map, some, keep_rest=False)(scalars)
    floor = sae_edit(sae_map, None)(scalars)
    torch.testing.assert_close(rest + part, floor)
    assert part.abs().max() > 1e-3


def _attribution(firing: int, silent: int) -> pl.DataFrame:
    """SAE rows for two targets; the silent latents get the largest support."""
    n = firing + silent
    rows = []
    for target in ("backtrack", "answer"):
        for latent in range(n):
            rows.append(
                {
                    "kind": "sae", "target": target, "latent": latent,
                    "frac_active": 0.2 if latent < firing else 0.0,
                    "support": float(latent if target == "backtrack" else -latent),
                }
            )  # fmt: skip
    rows.append({"kind": "lora", "target": "backtrack", "latent": None,
                 "frac_active": 0.9, "support": 99.0})  # fmt: skip
    return pl.DataFrame(rows)


def test_random_control_uses_only_features_that_fire():
    firing, silent, size = 7, 5, 3
    sets = choose_sets(_attribution(firing, silent), ["backtrack", "answer"],
                       size, n_random=40, seed=0)  # fmt: skip
    randoms = [s for s in sets if s.name.startswith("random-")]
    drawn = {x for s in randoms for x in s.latents}
    assert drawn == set(range(firing))  # every firing one is drawn, no other
    assert all(len(set(s.latents)) == size for s in randoms)
    top = {s.target: s.latents for s in sets if s.name == "top"}
    assert set(top["backtrack"]) == {4, 5, 6}  # largest support among firing
    assert set(top["answer"]) == {0, 1, 2}
    tests = {(s.name, s.test) for s in sets if s.target == "backtrack"}
    assert ("top", "necessity") in tests and ("random-39", "sufficiency") in tests


def test_a_set_larger_than_the_firing_features_fails_naming_the_key():
    with pytest.raises(
        ValueError, match=r"attribution.set_size: 8 is larger than the 7"
    ):
        choose_sets(_attribution(7, 5), ["backtrack"], 8, n_random=2, seed=0)


def test_sets_table_deltas_against_references_and_random_sets():
    n = 40
    ones, zeros = np.ones(n), np.zeros(n)

    def run(correct, backtracks, tokens=100.0):
        return {"correct": correct, "backtracks": backtracks,
                "tokens": np.full(n, tokens)}  # fmt: skip

    refs = [FeatureSet("-", name, "reference") for name in ("full", "floor", "base")]
    top = FeatureSet("backtrack", "top", "necessity", (1, 2))
    rand = [FeatureSet("backtrack", f"random-{i}", "necessity", (i,)) for i in range(2)]
    runs = {
        refs[0].key: run(ones, 2 * ones),
        refs[1].key: run(ones, 2 * ones),
        refs[2].key: run(zeros, zeros),
        top.key: run(ones, zeros),  # the set removes every backtrack
        rand[0].key: run(ones, 2 * ones),
        rand[1].key: run(ones, ones),
    }
    df = sets_table([*refs, top, *rand], runs, n_boot=200, seed=0)
    top_bt = (pl.col("set") == "top") & (pl.col("metric") == "backtrack_per_1k_tokens")
    row = df.filter(top_bt).row(0, named=True)
    assert row["reference"] == "floor"
    assert row["delta"] == pytest.approx(-20.0)  # 20 per 1k tokens -> 0
    assert row["random_mean"] == pytest.approx(-5.0)  # deltas 0 and -10
    assert row["vs_random"] == pytest.approx(-15.0)
    assert row["random_below"] == 0.0
    assert row["delta_lo"] == row["delta_hi"] == pytest.approx(-20.0)  # no spread
    acc = df.filter((pl.col("set") == "full") & (pl.col("metric") == "accuracy"))
    assert acc["delta"][0] == 1.0 and acc["reference"][0] == "base"


def test_figures_draw_from_the_tables():
    from lorascope.figures import attribution, behaviour_sets
    from lorascope.figures.style import FigureStyle

    style = FigureStyle.from_config({"width_in": 3.5, "font_size": 8, "dpi": 50})
    exact = pl.DataFrame({"kind": ["lora"] * 3 + ["sae"] * 3, "unit": [0, 1, 2] * 2,
                          "target": ["loss"] * 6,
                          "estimate": [0.1, -0.2, 0.3, 0.0, 0.1, 0.2],
                          "exact": [0.1, -0.1, 0.2, 0.01, 0.1, 0.3]})  # fmt: skip
    val = pl.DataFrame({"kind": ["lora", "sae"], "target": ["loss", "loss"],
                        "rho": [1.0, 0.5], "rho_lo": [0.9, 0.1],
                        "rho_hi": [1.0, 0.9]})  # fmt: skip
    fig = attribution.draw({"exact": exact, "validation": val}, {}, style).fig
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert len(fig.axes) == 2 and "ρ 0.50 [0.10, 0.90]" in texts
    sets = pl.DataFrame(
        {"target": ["backtrack"] * 3, "set": ["top", "random-0", "random-1"],
         "test": ["necessity"] * 3, "metric": ["backtrack_per_1k_tokens"] * 3,
         "delta": [-20.0, 0.0, -10.0], "delta_lo": [-25.0, -1, -12],
         "delta_hi": [-15.0, 1, -8]}
    )  # fmt: skip
    fig = behaviour_sets.draw({"sets": sets}, {}, style).fig
    assert len(fig.axes) == 2  # one target x (necessity, sufficiency)


def test_dashboards_show_attribution_and_a_page_per_behaviour_set(tmp_path):
    import jinja2

    from lorascope.dashboards.attribution import (
        attribution_views,
        index_support,
        index_target,
        write_set_pages,
    )
    from lorascope.dashboards.build import _env

    table = pl.DataFrame(
        {"kind": ["sae"] * 4, "feature": [0, 0, 1, 1],
         "target": ["loss", "backtrack"] * 2, "effect": [0.1, -0.2, 0.3, 0.05],
         "effect_lo": [0.0] * 4, "effect_hi": [0.4] * 4,
         "support": [-0.1, 0.2, -0.3, -0.05], "rank": [1, 1, 2, 2],
         "n_sequences": [3] * 4}
    )  # fmt: skip
    assert index_target(table) == "backtrack"  # backtrack sorts the index first
    assert index_support("sae", table, "backtrack") == {0: 0.2, 1: -0.05}
    assert [r["target"] for r in attribution_views("sae", table)[1]] == [
        "backtrack", "loss"
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    sets = beyond_paper_tables(rng, {"sae": 2})["attribution/sets.parquet"]
    env = _env()
    assert isinstance(env, jinja2.Environment)
    pages = write_set_pages(sets, env, tmp_path)
    assert [p["target"] for p in pages] == ["backtrack"]
    text = (tmp_path / "sets" / "backtrack.html").read_text()
    assert "sae latent 7" in text and "-0.4 [-0.5, -0.3]" in text
