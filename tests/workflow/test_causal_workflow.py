"""Issue 18 on the shared micro reference run: the feature-ablation table,
direct effects, causal figure and dashboard panels are built by `all` and
agree with the tables they come from."""

import json
import math

import polars as pl
import pytest
import wfrun

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    return wfrun.results(wfrun.reference_run(tmp_path_factory.getbasetemp()))


def test_feature_kl_table_covers_both_kinds(res):
    df = pl.read_parquet(res / "ablation/feature_kl.parquet")
    sae = df.filter(pl.col("kind") == "sae")
    lora = df.filter(pl.col("kind") == "lora")
    assert sae.height == pl.read_parquet(res / "features/sae/features.parquet").height
    assert lora.height == pl.read_parquet(res / "features/lora/features.parquet").height
    # the SAE is lossy: a positive floor, the same for every row
    assert sae["kl_floor"].n_unique() == 1 and sae["kl_floor"][0] > 0
    assert (sae["kl_mean"] >= 0).all() and (sae["kl_mean"] > 0).any()
    assert set(sae["n_sequences"]) == {2}  # causal.kl_sequences in micro.yaml
    comps = pl.read_parquet(res / "ablation/kl_components.parquet")
    joined = lora.join(comps, left_on="component", right_on="index", suffix="_c")
    assert (joined["kl_mean"] == joined["kl_mean_c"]).all()
    md = (res / "ablation/feature_kl.md").read_text()
    assert "reconstruction floor" in md


def test_direct_effects_and_fingerprints(res):
    fx = pl.read_parquet(res / "ablation/direct_effects.parquet")
    lora = pl.read_parquet(res / "features/lora/features.parquet")
    writers = lora.filter(pl.col("module").is_in(["o", "down"]))["feature"]
    assert set(fx.filter(pl.col("kind") == "lora")["feature"]) == set(writers)
    assert fx.group_by("kind", "feature", "direction").len()["len"].max() == 10
    fp = pl.read_parquet(res / "ablation/sae_decoder.parquet")
    comps = pl.read_parquet(res / "components.parquet")
    n_sae = pl.read_parquet(res / "features/sae/features.parquet").height
    assert fp.height == n_sae * comps.height


def test_figure_and_dashboard_panels(res):
    assert (res / "figures/fig_causal.png").stat().st_size > 5000
    stats = pl.read_parquet(res / "figures/fig_causal.parquet")
    assert set(stats["kind"]) == {"lora", "sae"}
    index = (res / "dashboards/index.html").read_text()
    assert 'data-key="kl"' in index
    page = (res / "dashboards/features/sae-0.html").read_text()
    assert 'id="ablation-kl"' in page and "svg class='fingerprint'" in page


def test_feature_accuracy_table(res):
    df = pl.read_parquet(res / "ablation/feature_accuracy.parquet")
    # micro.yaml: causal.accuracy_top_n 1, accuracy_limit 4, one benchmark
    assert df["kind"].to_list() == ["reference", "reference", "sae", "component"]
    assert set(df["n"]) == {4} and set(df["benchmark"]) == {"toy_add3"}
    kl = pl.read_parquet(res / "ablation/feature_kl.parquet")
    sae = kl.filter((pl.col("kind") == "sae") & (pl.col("frac_active") > 0))
    top = sae.sort("kl_mean", descending=True)["latent"][0]
    assert df.filter(pl.col("kind") == "sae")["latent"][0] == top
    comps = pl.read_parquet(res / "ablation/kl_components.parquet")
    top_c = comps.sort("kl_mean", descending=True)["index"][0]
    assert df.filter(pl.col("kind") == "component")["component"][0] == top_c
    assert df["reference"].to_list() == ["full", "full", "floor", "full"]
    assert (
        (df["accuracy_lo"] <= df["accuracy"]) & (df["accuracy"] <= df["accuracy_hi"])
    ).all()
    md = (res / "ablation/feature_accuracy.md").read_text()
    assert "paired bootstrap" in md


def test_sae_recovered_is_the_floor_against_the_zero_run(res):
    """Issue 29 item 3: KL / loss recovered, from feature_ablation's sequences."""
    got = json.loads((res / "ablation/sae_recovered.json").read_text())
    sae = pl.read_parquet(res / "ablation/feature_kl.parquet").filter(
        pl.col("kind") == "sae"
    )
    assert got["undefined"] == {}
    assert math.isclose(got["kl_full_recon"], sae["kl_floor"][0], rel_tol=1e-12)
    assert got["n_sequences"] == sae["n_sequences"][0]
    assert got["n_kl_tokens"] == sae["n_tokens"][0]
    assert 0 < got["n_loss_tokens"] <= got["n_kl_tokens"]
    # the micro SAE is lossy but better than zeroing every scalar
    assert 0 < got["kl_recovered"] < 1
    assert got["kl_recovered"] == 1 - got["kl_full_recon"] / got["kl_full_zero"]
    gap = got["loss_zero"] - got["loss_full"]
    assert got["loss_recovered"] == (got["loss_zero"] - got["loss_recon"]) / gap
    assert "KL recovered" in (res / "ablation/feature_kl.md").read_text()
