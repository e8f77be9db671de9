"""Issue 28 on the shared micro reference run: `all` builds the attribution
table for every feature and target, the validation against exact removal,
the behaviour sets with their random control, the figures and the
dashboard pages, and they agree with the tables they come from."""

import polars as pl
import pytest
import wfrun

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    return wfrun.results(wfrun.reference_run(tmp_path_factory.getbasetemp()))


def test_attribution_covers_every_feature_and_target(res):
    df = pl.read_parquet(res / "attribution/features.parquet")
    targets = ["backtrack", "answer", "loss"]
    assert sorted(df["target"].unique()) == sorted(targets)
    for kind in ("lora", "sae"):
        feats = pl.read_parquet(res / f"features/{kind}/features.parquet")
        part = df.filter(pl.col("kind") == kind)
        assert part.height == feats.height * len(targets)
        assert set(part["feature"]) == set(feats["feature"])
    loss = df.filter(pl.col("target") == "loss")
    assert loss["effect"].is_finite().all() and (loss["effect"].abs() > 0).any()
    assert (loss["effect_lo"] <= loss["effect_hi"]).all()
    # a LoRA direction takes its component's estimate (both signs share it)
    lora = loss.filter(pl.col("kind") == "lora")
    assert (
        lora.group_by("component").agg(pl.col("effect").n_unique())["effect"].max() == 1
    )


def test_validation_against_exact_removal(res):
    val = pl.read_parquet(res / "attribution/validation.parquet")
    assert {"lora", "sae"} <= set(val["kind"])
    assert val["rho"].is_between(-1, 1).all() and (val["n_units"] >= 3).all()
    exact = pl.read_parquet(res / "attribution/exact.parquet")
    assert (exact["exact"].abs() > 0).any()
    md = (res / "attribution/validation.md").read_text()
    assert "Cost per sequence" in md and "ratio" in md


def test_behaviour_sets_with_random_control(res):
    sets = pl.read_parquet(res / "attribution/sets.parquet")
    att = pl.read_parquet(res / "attribution/features.parquet")
    firing = set(
        att.filter((pl.col("kind") == "sae") & (pl.col("frac_active") > 0))["latent"]
    )
    chosen = sets.filter(pl.col("set") != "-")["latents"].explode().drop_nulls()
    assert set(chosen) <= firing  # top and random sets draw only firing features
    top = sets.filter(pl.col("set") == "top")
    assert set(top["test"]) == {"necessity", "sufficiency"}
    assert top["vs_random"].is_not_null().all()
    assert set(sets.filter(pl.col("test") == "reference")["set"]) == {
        "full", "floor", "base"
    }  # fmt: skip


def test_figures_and_dashboard_pages(res):
    for name in ("fig_attribution", "fig_behaviour_sets"):
        assert (res / f"figures/{name}.png").stat().st_size > 0
    index = (res / "dashboards/index.html").read_text()
    assert 'data-key="attr"' in index and 'href="sets/backtrack.html"' in index
    assert "Necessity" in (res / "dashboards/sets/backtrack.html").read_text()
    page = next((res / "dashboards/features").glob("sae-*.html")).read_text()
    assert 'id="attribution"' in page
