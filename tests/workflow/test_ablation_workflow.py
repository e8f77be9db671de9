"""Rules kl_ablation and steering_sweep through Snakemake, on tiny real artifacts.

Upstream stages are replaced by files written here in their real formats
(HF model dir, PEFT adapter, components.parquet, sft.parquet, benchmark,
SAELens SAE, features and explanations), so only this stage's rules run.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from conftest import REPO, add_random_lora, make_tiny_qwen
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from lorascope.core.chat import build_example
from lorascope.core.components import component_table
from lorascope.toy.tasks import benchmark_frame

pytestmark = pytest.mark.slow

TARGETS = [
    "results/toy/ablation/kl_layers.parquet",
    "results/toy/steering/sweep.parquet",
]


def write_world(root: Path, tokenizer) -> None:
    run = root / "results" / "toy"
    base = make_tiny_qwen(len(tokenizer))
    base.save_pretrained(run / "toy/base_model")
    tokenizer.save_pretrained(run / "toy/base_model")
    adapter = run / "train/rank1/adapter"
    add_random_lora(make_tiny_qwen(len(tokenizer))).save_pretrained(adapter)
    table = component_table(adapter)
    table.write_parquet(run / "components.parquet")
    rows = []
    for i in range(4):
        ex = build_example(tokenizer, f"What is {i}+2?", f"{i}+2. Wait, 2+{i}.", "x")
        rows.append({"doc": i, "input_ids": ex.input_ids, "labels": ex.labels})
    (run / "data/bench").mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(run / "data/sft.parquet")
    bench = benchmark_frame("toy_add3", 3, 3, 0)
    bench.write_parquet(run / "data/bench/toy_add3.parquet")
    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=table.height, d_sae=16))
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.normal_()
        sae.threshold.fill_(0.01)
    sae.save_model(run / "sae/model")
    (run / "features/sae").mkdir(parents=True)
    (run / "autointerp/explanations").mkdir(parents=True)
    features = pl.DataFrame({"feature": [0, 1], "latent": [3, 5]})
    features.write_parquet(run / "features/sae/features.parquet")
    explanations = pl.DataFrame(
        {"feature": [0, 1], "explanation": ["digits", "hesitation before a redo"]}
    )
    explanations.write_parquet(run / "autointerp/explanations/sae.parquet")


def snakemake(root: Path, config: dict) -> subprocess.CompletedProcess:
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "Snakefile").write_text(
        'configfile: "config.yaml"\n'
        f'include: "{REPO}/workflow/rules/common.smk"\n'
        f'include: "{REPO}/workflow/rules/ablation.smk"\n'
        f'include: "{REPO}/workflow/rules/steering.smk"\n'
    )
    cmd = [sys.executable, "-m", "snakemake", *TARGETS, "--cores", "1"]
    # The Snakefile here sits in a temp dir, so common.smk cannot find src/
    # beside it: point the jobs at this checkout's package explicitly.
    pythonpath = os.pathsep.join(
        p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    return subprocess.run(
        cmd, cwd=root, capture_output=True, text=True, timeout=600, env=env
    )


def test_rules_run_and_fail_clearly(tmp_path, toy_tokenizer):
    write_world(tmp_path, toy_tokenizer)
    config = {
        "run": "toy",
        "device": "cpu",
        "toy": {"benchmarks": {"toy_add3": {"digits": 3, "n": 3}}},
        "eval": {"benchmarks": ["toy_add3"], "max_new_tokens": 6, "batch_size": 3},
        "ablation": {"n_sequences": 9, "max_tokens": 48},
        "steering": {"alphas": [0, 100], "limit": 2, "kl_sequences": 1, "top_kl": 1},
    }
    bad = snakemake(tmp_path, config)
    assert bad.returncode != 0
    log = (tmp_path / "logs/toy/ablation/kl_ablation.log").read_text()
    assert "ablation.n_sequences: 9 requested but the SFT set has 4 rows" in log
    assert not (tmp_path / "results/toy/ablation").exists()

    # A bad steering target fails that job only; the KL tables stay.
    config["ablation"]["n_sequences"] = 3
    config["steering"]["components"] = [99]
    assert snakemake(tmp_path, config).returncode != 0
    log = (tmp_path / "logs/toy/steering/steering_sweep.log").read_text()
    assert "steering.components: no component 99" in log
    kl_file = tmp_path / "results/toy/ablation/kl_components.parquet"
    kl_mtime = kl_file.stat().st_mtime

    config["steering"]["components"] = []
    ok = snakemake(tmp_path, config)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert kl_file.stat().st_mtime == kl_mtime  # steering keys do not rerun KL
    run = tmp_path / "results/toy"
    layers = pl.read_parquet(run / "ablation/kl_layers.parquet")["layer"]
    assert layers.to_list() == [0, 1]
    assert pl.read_parquet(run / "ablation/kl_components.parquet").height == 14
    sweep = pl.read_parquet(run / "steering/sweep.parquet")
    assert sweep["label"].unique(maintain_order=True).to_list()[-1] == "sae.5"
    assert set(sweep["selection"]) == {"top_kl", "sae_keyword"}
    assert (sweep.filter(pl.col("alpha") == 0)["kl_to_unsteered"] < 1e-6).all()
    assert (run / "steering/sweep.md").read_text().startswith("# Steering sweep")

    # No SAE part: the SAE files are not needed, only components are steered;
    # and the sweep's own options reach the script: generated positions,
    # negative alphas, residual-stream variants (L0.q and L1.gate read the
    # residual). One run for both (each run costs the suite half a minute).
    shutil.rmtree(run / "sae")
    config["steering"]["max_sae_features"] = 0
    config["steering"].update(
        components=[0, 11], alphas=[0, -100], positions="generated", residual=True
    )
    ok = snakemake(tmp_path, config)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert kl_file.stat().st_mtime == kl_mtime
    sweep = pl.read_parquet(run / "steering/sweep.parquet")
    assert set(sweep["kind"]) <= {"component", "residual"}, set(sweep["kind"])
    assert sweep["label"].unique(maintain_order=True).to_list() == [
        "L0.q", "L1.gate", "resid L0.q", "resid L1.gate"]  # fmt: skip
    assert set(sweep["positions"]) == {"generated"}
    assert sorted(set(sweep["alpha"])) == [-100.0, 0.0]
    pushed = sweep.filter(pl.col("alpha") == -100)
    assert (pushed["kl_to_unsteered"] > 0).all() and (pushed["shift_norm"] > 0).all()
