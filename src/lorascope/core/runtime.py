"""Process-level helpers for workflow scripts: logging, seeding, devices.

Every `workflow/scripts/*.py` wraps its work in `script_logging(snakemake)` so
the rule's log file gets the messages, progress bars and any traceback. A job
given GPUs (its Snakemake `gpu` resource; the command rules pass `--gpus`)
fails at start when torch cannot use CUDA (`start_gpu_job`), naming the torch
build and the NVIDIA driver, instead of running a 32B model on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

# A job stops with the snakemake that started it (script_logging starts the
# watch; the shell rules' entry modules call it themselves).
from lorascope.core.processes import stop_when_snakemake_dies
from lorascope.core.secrets import scrub_text

log = logging.getLogger("lorascope")

# torch is imported inside the functions that need it: every workflow script
# imports this module, and most (figures, autointerp, tables) never touch
# torch, whose import costs seconds per job.
DTYPE_NAMES = ("float32", "bfloat16", "float16")


class _Scrubbed:
    """A text stream whose writes pass through `scrub_text`: URLs lose their
    userinfo and query credentials (httpx logs every request's full URL at
    INFO, `https://user:password@host/v1/...?code=...` included)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub_text(text))
        return len(text)

    def __getattr__(self, name):  # flush, fileno, isatty, close, ...
        return getattr(self._stream, name)


# GPUs the running job was given (set by `start_gpu_job`, inherited by the
# processes it starts): from then on device `auto` must mean CUDA.
JOB_GPUS_ENV = "LORASCOPE_JOB_GPUS"
# The oldest Linux driver branch each CUDA major release runs on (NVIDIA's
# CUDA Toolkit release notes, minor-version compatibility): torch 2.13 from
# PyPI is a CUDA 13 build.
MIN_DRIVER = {11: "450.80", 12: "525.60", 13: "580.65"}
NVIDIA_PROC_VERSION = Path("/proc/driver/nvidia/version")


class GPUUnavailable(RuntimeError):
    """A job that needs CUDA found none it can use."""


@contextlib.contextmanager
def script_logging(smk) -> Iterator[logging.Logger]:
    """Send stderr (logging, tqdm) to the rule's log, URLs scrubbed; record
    any traceback."""
    log_path = smk.log[0] if len(smk.log) else None
    raw = open(log_path, "w", buffering=1) if log_path else sys.stderr
    handle = _Scrubbed(raw)
    old_stderr = sys.stderr
    sys.stderr = handle
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=handle,
        force=True,
    )
    stop_when_snakemake_dies()
    try:
        if os.environ.get("HF_HUB_OFFLINE"):  # hub.prefetch: snapshots only
            log.info("hub offline: HF_HUB_OFFLINE=%s HF_DATASETS_OFFLINE=%s",
                     os.environ["HF_HUB_OFFLINE"],
                     os.environ.get("HF_DATASETS_OFFLINE"))  # fmt: skip
        start_gpu_job(getattr(smk, "resources", None), getattr(smk, "rule", None))
        yield log
    except BaseException:
        traceback.print_exc(file=handle)
        raise
    finally:
        sys.stderr = old_stderr
        if log_path:
            raw.close()


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def job_gpus() -> int:
    """GPUs this job was given (0: a CPU job, or not run by the workflow)."""
    return int(os.environ.get(JOB_GPUS_ENV) or 0)


def start_gpu_job(
    resources=None,
    rule: str | None = None,
    gpus: int | None = None,
    isolated: bool = False,
) -> None:
    """Record the GPUs a job was given (`resources.gpu`, or `gpus` for the
    command rules) and fail now if there are some and torch cannot use them
    (`isolated`: check in a child interpreter, see `require_cuda`)."""
    if gpus is None:
        gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus <= 0:
        return
    os.environ[JOB_GPUS_ENV] = str(gpus)
    require_cuda(f"rule {rule or '?'} was given {gpus} GPU(s)", isolated)


def driver_version() -> str | None:
    """The NVIDIA driver version visible to this process, or None."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  ..."
        words = NVIDIA_PROC_VERSION.read_text().split("Kernel Module", 1)[1].split()
        return words[0] if words else None
    except (OSError, IndexError):
        return None


def cuda_report() -> str:
    """The torch build and the driver, as a failure message states them."""
    import torch

    build = torch.version.cuda
    driver = driver_version()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    parts = [
        f"torch {torch.__version__} ("
        + (f"a CUDA {build} build" if build else "a CPU-only build")
        + ")",
        "NVIDIA driver "
        + (driver or "not found (no nvidia-smi, no /proc/driver/nvidia/version)"),
    ]
    if visible is not None:
        parts.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    return ", ".join(parts)


def _cuda_hint() -> str:
    import torch

    build = torch.version.cuda
    if not build:
        return "Install a CUDA build of torch in the job's environment"
    if driver_version() is None:
        return "The job sees no NVIDIA driver: check that it got a GPU node/card"
    need = MIN_DRIVER.get(int(build.split(".")[0]))
    return (
        f"A CUDA {build} build needs driver {need} or newer: update the driver, "
        "or install a torch build for the CUDA the driver supports"
        if need
        else "Check that the driver supports this torch build's CUDA"
    )


# Run by `require_cuda(isolated=True)`: the answer and torch's own warning.
_PROBE = (
    "import json, warnings, torch\n"
    "with warnings.catch_warnings(record=True) as w:\n"
    "    warnings.simplefilter('always')\n"
    "    ok = torch.cuda.is_available()\n"
    "print(json.dumps([ok, '; '.join(str(x.message).strip() for x in w)]))\n"
)


def _cuda_available(isolated: bool) -> tuple[bool, str]:
    """(torch can use CUDA, what torch warned). `isolated` asks a child
    interpreter: the check initialises the CUDA driver, after which a forked
    process (vLLM's engine) could not use it."""
    import warnings

    if isolated:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True
        )
        if out.returncode != 0:
            tail = out.stderr.strip().splitlines() or [f"exit {out.returncode}"]
            return False, f"the check itself failed: {tail[-1]}"
        ok, said = json.loads(out.stdout.strip().splitlines()[-1])
        return bool(ok), said
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = torch.cuda.is_available()
    return ok, "; ".join(str(w.message).strip() for w in caught)


def require_cuda(why: str, isolated: bool = False) -> None:
    """Raise GPUUnavailable (naming torch, its CUDA build and the driver)
    unless torch can use CUDA."""
    ok, said = _cuda_available(isolated)
    if ok:
        return
    raise GPUUnavailable(
        f"{why}, but torch cannot use CUDA: {cuda_report()}"
        + (f" (torch: {said})" if said else "")
        + f". {_cuda_hint()}; to run on the CPU instead, give the rule no GPU "
        "(the profile's gpu resource) and set device: auto or cpu"
    )


def resolve_device(name: str = "auto"):
    """`auto` picks CUDA when present, and must find it when the job was given
    GPUs; asking for CUDA without one is an error naming torch and the driver."""
    import torch

    if name.startswith("cuda"):
        require_cuda(f"device is {name!r}")
    elif name == "auto" and job_gpus():
        require_cuda(f"this job was given {job_gpus()} GPU(s) (device auto)")
    elif name == "auto" and not torch.cuda.is_available():
        if driver_version() is not None:  # a card this torch cannot use
            log.warning("device auto: running on the CPU although %s", cuda_report())
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda")
    return torch.device(name)


def torch_dtype(name: str):
    import torch

    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; choose from {DTYPE_NAMES}")
    return getattr(torch, name)
