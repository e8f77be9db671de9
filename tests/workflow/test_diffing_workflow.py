"""Issue 32 on the shared micro reference run: rule model_diff's tables and
figure, the steering sweep's model column; and a full fine-tune that cannot
be compared with the base fails before any job, naming both."""

import json
import shutil

import numpy as np
import polars as pl
import pytest
import wfrun

from lorascope.diffing.tables import TABLE3_ROWS

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    return wfrun.results(wfrun.reference_run(tmp_path_factory.getbasetemp()))


def test_residual_and_kl_tables(res):
    residual = pl.read_parquet(res / "diffing/residual.parquet")
    n_layers = pl.read_parquet(res / "components.parquet")["layer"].max() + 1
    # micro.yaml: 4 training sequences, 2 prompts of its one benchmark
    assert residual.group_by("source").len().sort("source").rows() == [
        ("toy_add3", n_layers),
        ("train", n_layers),
    ]
    assert set(residual.filter(pl.col("source") == "train")["n_sequences"]) == {4}
    for col in ("share_write", "share_sae"):
        assert residual[col].is_between(0, 1 + 1e-9).all()
    # rank 1 on o and down: two write directions per layer, cumulative
    train = residual.filter(pl.col("source") == "train").sort("layer")
    assert train["dim_write"].to_list() == [2 * (i + 1) for i in range(n_layers)]
    hidden = json.loads((res / "toy/base_model/config.json").read_text())["hidden_size"]
    np.testing.assert_allclose(train["chance_write"], train["dim_write"] / hidden)
    assert (train["r2_rank1_lo"] <= train["r2_rank1"] + 1e-12).all()
    kl = pl.read_parquet(res / "diffing/kl_layers.parquet")
    last = kl.filter(pl.col("layer") == n_layers - 1)
    # the whole Δh_full written in at the last layer: only the heads differ
    assert (last["kl_captured_whole"] > 0.5).all()


def test_table3_contexts_and_figure(res):
    t3 = pl.read_parquet(res / "diffing/table3.parquet")
    assert t3.filter(pl.col("source") == "train")["metric"].to_list() == [
        m for m, _ in TABLE3_ROWS
    ]
    kl_fb = t3.filter(pl.col("metric") == "kl_full_base")["value"]
    assert (kl_fb > 0).all()  # the toy's full fine-tune moved the model
    ci = t3.filter(pl.col("ci_low").is_not_nan())
    assert (ci["ci_low"] <= ci["value"] + 1e-12).all()
    assert "Table 3" in (res / "diffing/table3.md").read_text()
    ctx = pl.read_parquet(res / "diffing/contexts.parquet")
    assert ctx.height > 0 and (ctx["value"].diff().drop_nulls() <= 0).all()
    tokens = pl.read_parquet(res / "diffing/tokens.parquet")
    per_source = tokens.group_by("source").agg(
        pl.len(), pl.col("kl_full_base").mean(), pl.col("kl_full_rank1").mean()
    )
    joined = per_source.join(t3.filter(pl.col("metric") == "kl_full_base"), on="source")
    assert (joined["len"] == joined["n_tokens"]).all()
    np.testing.assert_allclose(joined["kl_full_base"], joined["value"], rtol=1e-6)
    assert ctx["value"][0] == pytest.approx(tokens["kl_full_rank1"].max())
    pcs = pl.read_parquet(res / "diffing/feature_pcs.parquet")
    assert set(pcs["kind"]) == {"lora", "sae"} and pcs["cosine"].is_between(0, 1).all()
    for kind, key in (("lora", "component"), ("sae", "latent")):
        keys = set(pcs.filter(pl.col("kind") == kind)["key"])
        feats = pl.read_parquet(res / f"features/{kind}/features.parquet")
        shown = feats.filter(pl.col(key).is_in(keys))["feature"]
        hidden = feats.filter(~pl.col(key).is_in(keys))["feature"]
        page = (res / f"dashboards/features/{kind}-{shown[0]}.html").read_text()
        assert 'id="full-finetune"' in page and "PC 1" in page
        if len(hidden):  # layer-0 q/k/v read the embeddings: no panel
            page = (res / f"dashboards/features/{kind}-{hidden[0]}.html").read_text()
            assert 'id="full-finetune"' not in page
    assert (res / "figures/fig_diffing.png").stat().st_size > 5000
    sweep = pl.read_parquet(res / "steering/sweep.parquet")
    assert set(sweep["model"]) == {"rank1"}  # steering.models default


def test_incompatible_full_finetune_fails_before_any_job(tmp_path):
    full = tmp_path / "other-full"
    full.mkdir()
    toy = wfrun.REPO / "resources" / "toy" / "base_model"
    cfg = json.loads((toy / "config.json").read_text())
    (full / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 6}))
    shutil.copy(toy / "tokenizer.json", full / "tokenizer.json")
    work = wfrun.workdir(tmp_path / "run", {"model": {"full_finetune": str(full)}})
    proc = wfrun.snakemake(work, ["all"], check=False, timeout=300)
    assert proc.returncode != 0
    for name in ("num_hidden_layers", "4", "6", str(full), "base model"):
        assert name in proc.stderr, f"{name!r} not in:\n{proc.stderr[-3000:]}"
    assert not (work / "results").exists() and not (work / "logs").exists()
