"""A job the profile gives a GPU fails at start on a machine whose torch cannot
use one, through the real workflow (issue 31, item 4).

Script rules see their `gpu` resource in `script_logging`; the command rules
(training, generation) get it as `--gpus`. This machine has no GPU and a
CPU-only torch, so any job given `gpu=1` must stop before its work, naming
the torch build, where the profile's gpu would otherwise be ignored and the
job would run on the CPU. Cheap: one toy job and a dry run, no reference run.
"""

from __future__ import annotations

import pytest
import torch
import wfrun

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(torch.cuda.is_available(), reason="torch can use CUDA here"),
]


def test_a_script_job_given_a_gpu_stops_naming_the_torch_build(tmp_path):
    work = wfrun.workdir(tmp_path / "w")
    bench = wfrun.target("toy/bench/toy_add3.parquet")
    proc = wfrun.snakemake(
        work, [bench], ["--set-resources", "toy_bench:gpu=1"], check=False
    )
    assert proc.returncode != 0
    log = (work / "logs" / "micro" / "toy" / "toy_bench_toy_add3.log").read_text()
    assert "GPUUnavailable: rule toy_bench was given 1 GPU(s), but torch" in log
    assert f"torch {torch.__version__} (a CPU-only build)" in log
    assert not (work / bench).exists()
    # The same job without a GPU runs on the CPU as before.
    wfrun.snakemake(work, [bench])
    assert (work / bench).exists()


def test_command_rules_pass_their_gpus(tmp_path):
    work = wfrun.workdir(tmp_path / "w")
    gpus = ["--set-resources", "train_rank1:gpu=1", "eval_generate:gpu=2"]
    plan = wfrun.snakemake(work, ["all"], ["-n", "-p", *gpus]).stdout
    lines = plan.splitlines()
    train = [ln for ln in lines if "-m lorascope.train --variant rank1" in ln]
    generate = [ln for ln in lines if "-m lorascope.evaluation" in ln]
    assert train and all("--gpus 1 " in ln for ln in train), train
    assert generate and all("--gpus 2 " in ln for ln in generate), generate
