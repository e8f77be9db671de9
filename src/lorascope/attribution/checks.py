"""Checks of the attribution section before any job starts (the Snakefile's
`onstart`, through `lorascope.workflow.preflight`); the jobs check the same
at their start, before they write anything, for what was not on disk then.

- `attribution.backtrack_tokens`: each word one token of the base model's
  tokenizer, when the tokenizer is on disk (the shipped toy model, a local
  model directory or a prefetched snapshot: the job's `base` param);
- `attribution.set_size`: not more than the SAE features that fire on the
  attribution sequences, from `attribution/features.parquet` when it exists
  and no scheduled job rebuilds it.

Imports nothing heavy until a scheduled job needs the check.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["firing_problem", "n_firing", "preflight_attribution"]

RULES = ("feature_attribution", "behaviour_sets")


def _tokenizer_dir(config: dict, base: str) -> Path | None:
    from lorascope.core.checks import SHIPPED_TOY_MODEL
    from lorascope.core.names import is_toy

    if is_toy(config["model"]["base"]) and not config["toy"]["rebuild"]:
        return SHIPPED_TOY_MODEL
    path = Path(base)
    return path if (path / "tokenizer_config.json").is_file() else None


def firing_problem(set_size: int, n_firing: int, where: str) -> str | None:
    """The set size against the features that fire (`where` names them)."""
    if set_size <= n_firing:
        return None
    return (
        f"attribution.set_size: {set_size} is larger than the {n_firing} SAE "
        f"features that fire ({where})"
    )


def n_firing(table: str) -> int:
    """SAE features of an attribution table that fire (frac_active > 0)."""
    import polars as pl

    df = pl.read_parquet(table, columns=["kind", "latent", "frac_active"])
    df = df.filter((pl.col("kind") == "sae") & (pl.col("frac_active") > 0))
    return df["latent"].n_unique()


def sequences_problem(config: dict) -> str | None:
    """attribution.validate_sequences above the attribution's sequences, as a
    message naming the key; None if it fits. Config only: checked before any
    job and again by the job."""
    att, ab = config["attribution"], config["ablation"]
    n_seq = att["n_sequences"] or ab["n_sequences"]
    if att["validate_sequences"] <= n_seq:
        return None
    return (
        f"attribution.validate_sequences: {att['validate_sequences']} is more "
        f"than the {n_seq} attribution sequences (attribution.n_sequences / "
        "ablation.n_sequences)"
    )


def preflight_attribution(config: dict, jobs) -> list[str]:
    """Problems of the scheduled attribution jobs (each starts with its key);
    `config` is the run's whole config (the jobs declare only what they read)."""
    jobs = list(jobs)
    made = {os.path.normpath(str(f)) for job in jobs for f in job.output}
    out, seen = [], set()
    for job in jobs:
        if job.rule.name not in RULES:
            continue
        if job.rule.name == "feature_attribution" and (p := sequences_problem(config)):
            out.append(p)
        words = tuple(config["attribution"]["backtrack_tokens"])
        where = _tokenizer_dir(config, str(job.params.base))
        if where is not None and (where, words) not in seen:
            seen.add((where, words))
            from transformers import AutoTokenizer

            from lorascope.attribution.targets import token_problems

            out += token_problems(AutoTokenizer.from_pretrained(where), list(words))
        table = job.input.get("attribution")
        if job.rule.name == "behaviour_sets" and table is not None:
            table = os.path.normpath(str(table))
            if table not in made and os.path.isfile(table):
                problem = firing_problem(
                    config["attribution"]["set_size"], n_firing(table), table
                )
                out += [problem] if problem else []
    return out
