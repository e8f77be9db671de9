"""A job that needs a GPU fails at start when torch cannot use one.

torch 2.13 from PyPI is a CUDA 13 build: on an older driver
`torch.cuda.is_available()` is False and `device: auto` would run a 32B model
on the CPU for days. A job given GPUs (its `gpu` resource; the command rules'
`--gpus`) or configured with `device: cuda` must stop instead, naming the
torch build and the driver. This machine has no GPU and a CPU-only torch, so
the plain cases are real; a CUDA build on an old driver is monkeypatched.
"""

from __future__ import annotations

import subprocess
import types
import warnings

import pytest
import torch

from lorascope.core import runtime
from lorascope.core.runtime import (
    JOB_GPUS_ENV,
    GPUUnavailable,
    resolve_device,
    script_logging,
    start_gpu_job,
)

needs_cpu_torch = pytest.mark.skipif(
    torch.cuda.is_available(), reason="torch can use CUDA here"
)


@pytest.fixture(autouse=True)
def no_job_gpus(monkeypatch):
    """start_gpu_job records the GPUs in the environment: undone per test."""
    monkeypatch.setenv(JOB_GPUS_ENV, "0")


@pytest.fixture()
def old_driver(monkeypatch):
    """A CUDA 13 build of torch under driver 550 (CUDA 12.4): what torch says."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")

    def unavailable():
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old "
            "(found version 12040).",
            UserWarning,
            stacklevel=1,
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", unavailable)
    monkeypatch.setattr(runtime, "driver_version", lambda: "550.54.15")


@needs_cpu_torch
def test_a_job_given_a_gpu_fails_at_start_naming_torch_and_driver():
    with pytest.raises(GPUUnavailable) as err:
        start_gpu_job(types.SimpleNamespace(gpu=1), "extract_activations")
    msg = str(err.value)
    assert msg.startswith("rule extract_activations was given 1 GPU(s), but torch")
    assert f"torch {torch.__version__} (a CPU-only build)" in msg
    assert "NVIDIA driver" in msg and "Install a CUDA build of torch" in msg


def test_old_driver_names_build_driver_and_the_minimum(old_driver):
    with pytest.raises(GPUUnavailable) as err:
        start_gpu_job(gpus=2, rule="train_rank1")
    msg = str(err.value)
    assert f"torch {torch.__version__} (a CUDA 13.0 build)" in msg
    assert "NVIDIA driver 550.54.15" in msg
    assert "needs driver 580.65 or newer" in msg
    assert "driver on your system is too old (found version 12040)" in msg


def test_device_auto_in_a_gpu_job_never_falls_back_to_the_cpu(old_driver):
    # Without GPUs given, auto on this torch is the CPU, with a warning that a
    # driver is there.
    with pytest.warns(UserWarning, match="too old"):
        assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(GPUUnavailable):
        start_gpu_job(gpus=1, rule="kl_ablation")
    with pytest.raises(GPUUnavailable, match="given 1 GPU.*device auto"):
        resolve_device("auto")  # a later call in the same job, too


def test_device_cuda_fails_naming_the_setting(old_driver):
    with pytest.raises(GPUUnavailable, match="device is 'cuda:1', but torch cannot"):
        resolve_device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cpu_jobs_are_not_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("checked"))
    start_gpu_job(types.SimpleNamespace(gpu=0), "figure_classes")
    start_gpu_job(types.SimpleNamespace(), "figure_classes")  # no gpu resource
    start_gpu_job(None, "x", gpus=0)
    assert runtime.job_gpus() == 0


@needs_cpu_torch
def test_a_script_rule_fails_before_its_work_and_logs_why(tmp_path):
    log = tmp_path / "job.log"
    smk = types.SimpleNamespace(
        log=[str(log)], resources=types.SimpleNamespace(gpu=1), rule="train_sae"
    )
    ran = []
    with pytest.raises(GPUUnavailable):
        with script_logging(smk):
            ran.append(True)
    assert not ran
    assert "rule train_sae was given 1 GPU(s), but torch" in log.read_text()


@needs_cpu_torch
def test_command_rules_check_at_start(tmp_path):
    """train (python -m lorascope.train) and eval_generate (python -m
    lorascope.evaluation, checked in a child interpreter: vLLM forks) fail
    before reading a file when given a GPU."""
    from lorascope.evaluation.job import main as eval_main
    from lorascope.train.trainer import main as train_main

    missing = str(tmp_path / "missing")
    args = ["--variant", "rank1", "--base", missing, "--sft", missing]
    with pytest.raises(GPUUnavailable, match="rule train_rank1 was given 1 GPU"):
        train_main([*args, "--out", missing, "--config", "{}", "--gpus", "1"])
    with pytest.raises(GPUUnavailable, match="rule eval_generate was given 2 GPU"):
        eval_main(["--spec", "{}", "--bench", missing, "--out", missing, "--gpus", "2"])


def test_driver_version_from_nvidia_smi_or_proc(monkeypatch, tmp_path):
    def smi(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 0, "580.159.04\n", "")

    monkeypatch.setattr(runtime.subprocess, "run", smi)
    assert runtime.driver_version() == "580.159.04"

    def no_smi(cmd, **kw):
        raise FileNotFoundError("nvidia-smi")

    proc = tmp_path / "version"
    proc.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12\n"
        "GCC version:  gcc version 12.3.0\n"
    )
    monkeypatch.setattr(runtime.subprocess, "run", no_smi)
    monkeypatch.setattr(runtime, "NVIDIA_PROC_VERSION", proc)
    assert runtime.driver_version() == "535.183.01"
    monkeypatch.setattr(runtime, "NVIDIA_PROC_VERSION", tmp_path / "absent")
    assert runtime.driver_version() is None
