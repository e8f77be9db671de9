"""Presets (config/presets/*.yaml): config files stacked with --configfile.

Each preset validates on top of the embedded and the paper-scale config and
sets exactly the values it cites; the options it sets are tested one by one
where they act (test_topk, test_extract, test_autointerp_pipeline, test_sae,
test_ablation, test_steering). The slow test checks the wiring: a feature-table
key reruns the feature tables, never the extraction.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import wfrun
import yaml
from snakemake.utils import update_config

from lorascope.core.config import validate

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "config" / "presets").glob("*.yaml"))


def _leaves(d: dict, path=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, (*path, k))
        else:
            yield (*path, k), v


def _get(cfg: dict, path):
    for k in path:
        cfg = cfg[k]
    return cfg


@pytest.mark.parametrize("base", ["config/config.yaml", "config/paper.yaml"])
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_validates_and_sets_its_values(base, preset):
    cfg = yaml.safe_load((REPO / base).read_text())
    values = yaml.safe_load(preset.read_text())
    update_config(cfg, values)
    merged = validate(cfg)
    for path, value in _leaves(values):
        assert _get(merged, path) == value, path


def test_reference_preset_changes_the_populations_and_protocols():
    values = yaml.safe_load((REPO / "config/presets/reference_code.yaml").read_text())
    defaults = validate({})
    changed = {p for p, v in _leaves(values) if _get(defaults, p) != v}
    assert {
        ("activations", "lora_modules"),
        ("activations", "mlp_tensor"),
        ("activations", "mlp_neurons_per_layer"),
        ("activations", "mlp_polarity"),
        ("activations", "min_activation"),
        ("autointerp", "n_contexts"),
        ("autointerp", "example_window"),
        ("autointerp", "shuffle_examples"),
        ("autointerp", "categories", "sae_taxonomy"),
        ("sae", "lr"),
        ("sae", "lr_warmup_steps"),
        ("sae", "epochs"),
        ("ablation", "draw_rng"),
        ("ablation", "average"),
    } <= changed


@pytest.mark.slow
def test_feature_table_keys_rerun_tables_not_extraction(tmp_path_factory):
    from test_figures_workflow import scheduled

    base = wfrun.reference_run(tmp_path_factory.getbasetemp())
    keep = [p.relative_to(wfrun.results(base)) for p in wfrun.results(base).iterdir()]
    over = {"activations": {"lora_modules": ["gate", "up", "down"],
                            "min_activation": 0.01, "min_contexts": 3}}  # fmt: skip
    work = wfrun.clone(base, tmp_path_factory.mktemp("population"), keep, over)
    jobs = scheduled(wfrun.snakemake(work, extra=["-n"]).stdout)
    assert (
        jobs.get("lora_features") == jobs.get("mlp_features") == 1
        and jobs.get("sae_features") == 1
    )
    assert not {"extract_activations", "train_sae", "kl_ablation"} & set(jobs)
    target = wfrun.target("features/lora/features.parquet", work)
    wfrun.snakemake(work, [target])
    feats = pl.read_parquet(work / target)
    assert set(feats["module"]) == {"gate", "up", "down"}
    assert feats.height == 4 * 3 * 2  # toy: 4 layers x 3 modules x 2 signs
    topk = pl.read_parquet(wfrun.results(work) / "features/lora/topk.parquet")
    assert topk["value"].min() > 0.01
    counts = dict(topk.group_by("feature").len().iter_rows())
    assert feats["n_contexts"].to_list() == [counts.get(f, 0) for f in range(24)]
    assert feats["few_contexts"].to_list() == [counts.get(f, 0) < 3 for f in range(24)]
    # contexts: the top-k windows and the random sample's (activations.sample_k),
    # both above the threshold; the sample reaches below the top-k
    ctx = pl.read_parquet(wfrun.results(work) / "features/lora/contexts.parquet")
    assert {"top", "sample"} <= set(ctx["source"]) and ctx["value"].min() > 0.01
    assert ctx.filter(pl.col("source") != "sample").height == topk.height
    low = ctx.group_by("feature").agg(
        pl.col("value").filter(pl.col("source") == "sample").min().alias("s"),
        pl.col("value").filter(pl.col("source") != "sample").min().alias("t"),
    )
    assert (low["s"] < low["t"]).sum() > low.height // 2
