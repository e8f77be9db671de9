"""Checks of the scheduled jobs against this machine and the finished
artifacts, run before any job starts.

Used by the Snakefile's `onstart` hook (`check_before_jobs` in
`workflow/rules/common.smk`), with the API-key checks of
`lorascope.workflow.environment`. Snakemake deletes a job's previous outputs
when it starts the job, before the job can look at its settings: a training
that then fails on a setting has already lost the finished adapter. So
whatever can be known before any job is checked here, for the jobs about to
run (not in a dry run):

- a device a job declares (`device`, `sae.device`, `ablation.device`) that
  names CUDA: with a local executor, this machine must have that GPU; with
  a cluster executor the submit node may have none, so the job's profile
  resources must give it a GPU (the job itself checks the card at its start,
  which on a cluster is after Snakemake removed its old outputs);
- `train.lora.target_modules` against the base model's modules, when a
  finished adapter would be lost (built on the meta device from the base
  model's config.json, when that is on disk: the toy or a local model, a
  prefetched snapshot, the hub cache; this imports torch, seconds); the
  training job checks the loaded model too, before it writes anything;
- `sae.lr_warmup_steps` (and one whole batch) against the SAE's training
  steps, from the activations manifest when it exists and no scheduled job
  rebuilds it (a rebuilt manifest's token count is not known yet).

Every message starts with the key path. Jobs are Snakemake's (`rule.name`,
`params`, `resources`, `input`, `output`); anything with those attributes
will do (the unit tests pass stand-ins).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["cuda_devices", "job_devices", "preflight_problems"]


def _devices_in(value: Any, path: str):
    """(key path, value) of every `device` key in a declared config."""
    if isinstance(value, dict):
        for key, sub in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "device" and not isinstance(sub, dict):
                yield where, sub
            else:
                yield from _devices_in(sub, where)


def job_devices(params) -> list[tuple[str, str]]:
    """(key, device) a job runs on, from the config its rule declares: a
    section's own device (sae.device, ablation.device) when set, else the
    top-level `device`."""
    found: list[tuple[str, Any]] = []
    for name, value in params.items():
        if name == "device" and isinstance(value, str):
            found.append(("device", value))
        else:
            found += _devices_in(value, "")
    own = [(k, v) for k, v in found if k != "device" and v is not None]
    if own:
        return sorted(set(own))
    return sorted({(k, v) for k, v in found if k == "device" and v is not None})


def cuda_devices() -> int:
    """CUDA devices torch sees on this machine (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _gpus(resources) -> int:
    gpus = resources.get("gpu", 0) if hasattr(resources, "get") else 0
    gres = resources.get("gres", "") if hasattr(resources, "get") else ""
    return int(gpus or 0) or int("gpu" in str(gres or ""))


def device_problems(jobs, local: bool, count: Callable[[], int]) -> list[str]:
    out, seen = [], set()
    visible = None
    for job in jobs:
        for key, device in job_devices(job.params):
            if not str(device).startswith("cuda"):
                continue
            index = int(device.split(":")[1]) if ":" in device else 0
            if local:
                if visible is None:
                    visible = count()
                if index >= visible and (key, device) not in seen:
                    seen.add((key, device))
                    have = "no CUDA device" if not visible else f"{visible} CUDA"
                    out.append(
                        f"{key}: {device!r}, but this machine has {have} (rule "
                        f"{job.rule.name} would fail after Snakemake removed its "
                        "old outputs); set it to auto or cpu, or run where the "
                        "GPU is"
                    )
            elif not _gpus(job.resources) and (key, job.rule.name) not in seen:
                seen.add((key, job.rule.name))
                out.append(
                    f"{key}: {device!r}, but the profile gives rule "
                    f"{job.rule.name} no GPU (resources gpu: 0): give it one in "
                    "the profile's set-resources, or set the device to auto"
                )
    return out


def target_module_problems(config: dict, jobs, module_names) -> list[str]:
    """`module_names(path, revision)`: the model's module names (raises
    OSError when its config is not on disk)."""
    for job in jobs:
        if job.rule.name != "train_rank1":
            continue
        from lorascope.core.components import groups_problem, target_modules_problem

        if problem := groups_problem(config["train"]["lora"]["target_modules"]):
            return [problem]
        if not any(os.path.exists(str(f)) for f in job.output):
            return []  # no finished adapter to lose: the job checks (no torch here)
        base = job.params.base  # as the job loads it: a dir or a hub id
        local = job.input.get("base")  # the toy dir, a local dir, a snapshot
        local = [local] if isinstance(local, str) else list(local or [])
        where = str(local[0]) if local else base
        if local and not Path(where).is_dir():
            return []  # made by a job about to run: the training job checks
        try:
            names = module_names(where, config["model"]["revision"])
        except (OSError, ValueError, ImportError):
            # Not on disk (a hub id not in the cache), or an architecture
            # this transformers cannot build: the training job checks the
            # loaded model before it writes anything.
            return []
        problem = target_modules_problem(
            names, config["train"]["lora"]["target_modules"], base
        )
        return [problem] if problem else []
    return []


def sae_step_problems(jobs) -> list[str]:
    from lorascope.sae.config import SaeConfig

    jobs = list(jobs)
    made = {os.path.normpath(str(f)) for job in jobs for f in job.output}
    out = []
    for job in jobs:
        if job.rule.name != "train_sae":
            continue
        manifest = os.path.normpath(str(job.input.manifest))
        if manifest in made or not os.path.isfile(manifest):
            continue
        cfg = SaeConfig.from_config(job.params.config)
        n_tokens = training_tokens(json.loads(Path(manifest).read_text()), cfg)
        problem = cfg.steps_problem(n_tokens)
        if problem:
            out.append(f"{problem}, from the tokens in {manifest}")
    return out


def training_tokens(manifest: dict, cfg) -> int:
    """The manifest's tokens the SAE trains on. With sae.heldout_every = k the
    documents with doc % k == 0 are held out; the manifest has no per-document
    lengths, so their tokens are estimated at the held-out share of documents
    (the job counts them exactly and checks again)."""
    n_tokens, k = int(manifest["n_tokens"]), cfg.heldout_every
    if not k:
        return n_tokens
    n_docs = max(s["doc_range"][1] for s in manifest["shards"]) + 1
    held = -(-n_docs // k)  # docs 0, k, 2k, ... below n_docs
    return n_tokens * (n_docs - held) // n_docs


def preflight_problems(
    config: dict,
    jobs: Iterable,
    local: bool,
    count: Callable[[], int] = cuda_devices,
    module_names: Callable | None = None,
) -> list[str]:
    """Every problem of the scheduled `jobs`, each starting with its key."""
    from lorascope.attribution.checks import preflight_attribution

    if module_names is None:
        from lorascope.core.models import skeleton_module_names as module_names
    jobs = list(jobs)
    return (
        device_problems(jobs, local, count)
        + target_module_problems(config, jobs, module_names)
        + sae_step_problems(jobs)
        + preflight_attribution(config, jobs)
    )


def check_before_jobs(workflow, config: dict) -> None:
    """What the jobs about to run need, checked before any starts (the
    Snakefile's onstart, not in a dry run; Snakemake removes a job's old
    outputs as it starts it): API keys and hub tokens
    (workflow.environment), devices, target modules, SAE steps, sweep axes."""
    from snakemake.exceptions import WorkflowError

    from lorascope.workflow.environment import check_environment

    try:
        jobs = list(workflow.dag.needrun_jobs())
    except AttributeError:  # Snakemake moved its DAG: check every step
        jobs = None
    named = None if jobs is None else [(j.rule.name, j.wildcards_dict) for j in jobs]
    problems = check_environment(config, jobs=named)
    problems += preflight_problems(config, jobs or [], local=workflow.local_exec)
    if problems:
        raise WorkflowError(
            "invalid config or environment for the jobs about to run:\n  "
            + "\n  ".join(problems)
        )
