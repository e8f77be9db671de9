"""Process-level helpers for workflow scripts: logging, seeding, devices.

Every `workflow/scripts/*.py` wraps its work in `script_logging(snakemake)` so
the rule's log file gets the messages, progress bars and any traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import traceback
from collections.abc import Iterator

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


def resolve_device(name: str = "auto"):
    """`auto` picks CUDA when present; asking for CUDA without one is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def torch_dtype(name: str):
    import torch

    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; choose from {DTYPE_NAMES}")
    return getattr(torch, name)
