"""Issue 29 on the session's reference micro run (no DAG of its own): the
toy world's ground truth, the SAE protocol (held-out metrics, the
architecture comparison) and the export loaded by sae_lens; and a clear
error, before any job, when ground truth is asked of non-toy data."""

from __future__ import annotations

import json

import polars as pl
import pytest
import wfrun
from sae_lens import SAE

from lorascope.toy.roles import ROLES


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return wfrun.results(wfrun.reference_run(tmp_path_factory.getbasetemp()))


def test_ground_truth_tables_and_figure(run):
    summary = pl.read_parquet(run / "groundtruth/summary.parquet")
    assert set(summary["kind"]) == {"lora", "mlp", "sae"}
    assert "sft" in set(summary["source"])
    assert summary["matched_f1"].is_between(0, 1).all()
    md = (run / "groundtruth/summary.md").read_text()
    agree, of = (
        md.split("parser vs generator on SFT characters: ")[1]
        .split(" agree")[0]
        .split(" of ")
    )
    assert int(agree) == int(of) > 0  # the parser reads the generator's roles
    tokens = pl.read_parquet(run / "groundtruth/tokens.parquet")
    scored = tokens.filter("scored")
    for role in ("column", "carry_in", "carry_out", "answer", "format"):
        assert scored[role].sum() > 0, role
    assert tokens.filter(~pl.col("scored")).select(ROLES).sum_horizontal().sum() == 0
    matched = pl.read_parquet(run / "groundtruth/matched.parquet")
    for (_, _), part in matched.group_by("source", "kind"):
        assert part["feature"].n_unique() == part.height  # one to one
    assert (run / "figures/fig_groundtruth.png").stat().st_size > 0


def test_sae_protocol(run):
    metrics = json.loads((run / "sae/metrics.json").read_text())
    held = metrics["heldout"]
    assert held["n_tokens"] > 0 and held["documents"] == "doc % 10 == 0"
    assert 0 <= held["dead_fraction"] <= 1 and held["mean_l0"] > 0
    table = pl.read_parquet(run / "groundtruth/sae_architectures.parquet")
    archs = ["batchtopk", "topk", "jumprelu", "matryoshka_batchtopk"]
    assert table["architecture"].unique(maintain_order=True).to_list() == archs
    assert table.height == 8
    for col in ("heldout_fvu", "gt_matched_f1", "decoder_cos_matched"):
        assert table[col].is_finite().all(), col


def test_export_loads_with_sae_lens(run):
    sae = SAE.load_from_disk(run / "export/sae", device="cpu")
    meta = sae.cfg.metadata
    components = pl.read_parquet(run / "components.parquet")
    assert meta.model_name == "toy" and meta.hook_name == "lora_scalars"
    assert [c["name"] for c in meta.scalar_layout] == components["name"].to_list()
    assert meta.adapter.startswith("trained by this run")
    doc = json.loads((run / "export/features.json").read_text())
    n = pl.read_parquet(run / "features/sae/features.parquet").height
    assert len(doc["features"]) == n
    assert all(f["activations"] for f in doc["features"] if f["explanations"])


def test_real_data_asked_for_ground_truth_fails_before_any_job(tmp_path):
    path = wfrun.workdir(tmp_path / "w", {"data": {"dataset": "simplescaling/s1K-1.1"}})
    proc = wfrun.snakemake(
        path, [wfrun.target("groundtruth/summary.parquet", path)], extra=("-n",),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "ground truth needs the embedded toy world" in out
    assert "data.dataset: toy, not 'simplescaling/s1K-1.1'" in out
    dry = wfrun.snakemake(path, ["all"], extra=("-n",))
    jobs = wfrun.job_stats(dry.stdout)
    assert jobs and "sae_export" in jobs  # the DAG is there, the toy-only rules not
    assert not {"ground_truth", "sae_architectures", "figure_groundtruth"} & set(jobs)
