"""The environment the scheduled jobs need, checked before any job starts.

Used by the `onstart` hook in `workflow/rules/common.smk`: API keys and
environment references of the LLM providers the scheduled jobs use, and
`HF_TOKEN` for a gated benchmark (GPQA) a scheduled job downloads, checked
when jobs are about to run, so a dry run or a training-only run needs no key,
and a missing token fails the run before any job, not when its fetch job
finally starts. Every message starts with the key path. The providers and
their usual key variables come from the autointerp provider table
(`lorascope.autointerp.providers.PROVIDERS`), imported when the check runs,
not while the Snakefile is parsed (it imports polars; no SDK, no torch).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

__all__ = ["check_environment"]


def _env_refs(value: Any, key: str):
    if isinstance(value, dict) and set(value) == {"env"}:
        yield key, value["env"]
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _env_refs(v, f"{key}.{k}")


def check_environment(
    config: dict,
    steps: set[str] | None = None,
    jobs: Iterable[tuple[str, dict]] | None = None,
) -> list[str]:
    """Missing API keys, environment references and hub tokens of the jobs
    about to run (with one closing line of every way out of missing keys).

    `steps`: the rules about to run (None = all). The explainer serves
    explain/assign/score, the categorizer the categories rule. `jobs`: those
    jobs as (rule, wildcards), telling which benchmark a bench_prepare job
    prepares and which repo a hub_fetch job fetches (None = every configured
    one, as far as `steps` allows); given without `steps`, its rules are them.
    """
    jobs = None if jobs is None else list(jobs)
    if steps is None and jobs is not None:
        steps = {rule for rule, _ in jobs}
    out = _llm_keys(config, steps)
    if steps is None or steps & {"bench_prepare", "hub_fetch"}:  # downloads
        out += _gated_benchmarks(config, steps, jobs)
    return out


def _gated_benchmarks(config: dict, steps, jobs) -> list[str]:
    """A gated benchmark needs HF_TOKEN when a scheduled job downloads it:
    hub_fetch of its repo with hub.prefetch, else its bench_prepare (a local
    eval.benchmark_files entry or an existing snapshot downloads nothing)."""
    from lorascope.evaluation.benchmarks import BENCHMARKS
    from lorascope.hub.names import parse_snapshot_name

    if os.environ.get("HF_TOKEN"):
        return []
    rule = "hub_fetch" if config["hub"]["prefetch"] else "bench_prepare"

    def downloads(name: str, hub_id: str) -> bool:
        if jobs is None:
            return steps is None or rule in steps
        for job, wildcards in jobs:
            if job != rule:
                continue
            if rule == "bench_prepare" and wildcards.get("benchmark") == name:
                return True
            snapshot = wildcards.get("snapshot", "")
            if rule == "hub_fetch" and snapshot.startswith(hub_id.replace("/", "--")):
                if parse_snapshot_name(snapshot)[0] == hub_id:
                    return True
        return False

    out, ev = [], config["eval"]
    for name in ev["benchmarks"]:
        spec = BENCHMARKS.get(name)
        if spec is None or not spec.gated or ev["benchmark_files"].get(name):
            continue
        if downloads(name, spec.hub_id):
            out.append(
                f"eval.benchmarks: {name} ({spec.hub_id}) is gated and a "
                f"scheduled job ({rule}) downloads it, but HF_TOKEN is not set "
                "(accept its terms on the hub and export HF_TOKEN, or set "
                f"eval.benchmark_files.{name} to a local copy)"
            )
    return out


def _llm_keys(config: dict, steps) -> list[str]:
    """Missing API keys and environment references for the LLM roles used,
    and, when any is missing, one closing line with every way out. The
    explainer serves explain/assign/score, the categorizer the categories
    rule; a categorizer set to null follows the explainer (one key serves
    both)."""
    from lorascope.autointerp.providers import PROVIDERS
    from lorascope.core.roles import role_fields

    ai = config["autointerp"]
    roles = []
    if steps is None or steps & {
        "autointerp_explain",
        "autointerp_assign",
        "autointerp_score",
    }:
        roles.append(("autointerp", "explainer"))
    if steps is None or "autointerp_categories" in steps:
        roles.append(("autointerp.categories", "categorizer"))
    out, used, missing = [], False, {}
    for key, role in roles:
        try:
            fields = role_fields(ai, role)
        except ValueError as err:  # a null model with another provider
            out.append(str(err))
            continue
        provider = fields["provider"]
        default_env = PROVIDERS[provider].key_env
        if default_env is None:  # answers without calls (offline)
            continue
        used, env = True, fields["api_key_env"]
        if env == "":  # a local server that takes no key
            continue
        env = env or default_env
        if os.environ.get(env) or env in missing:
            continue
        missing[env] = key
        follows = ai["categories"]["provider"] is None
        if role == "categorizer" and follows:
            what = f"null, following autointerp.provider {provider!r},"
        elif role == "explainer" and follows and len(roles) == 2:
            what = f"{provider!r} (the category proposal follows it)"
        else:
            what = repr(provider)
        out.append(
            f"{key}.api_key_env: {key}.provider is {what} but the environment "
            f"variable {env} is not set"
        )
    if used:  # both roles send autointerp.request_params
        for where, name in _env_refs(ai["request_params"], "autointerp.request_params"):
            if not os.environ.get(name):
                out.append(f"{where}: environment variable {name} is not set")
    if missing:
        out.append(_ways_out(ai, list(missing)))
    return out


def _ways_out(ai: dict, names: list[str]) -> str:
    """Everything a user can set to start, in one line."""
    own = ai["categories"]["provider"]
    offline = "{provider: offline}"
    if own not in (None, "offline"):
        offline = "{provider: offline, categories: {provider: offline}}"
    ways = [f"export {' and '.join(names)}"]
    if own not in (None, ai["provider"]):
        ways.append(
            "or use one provider for every role: autointerp.categories.provider "
            "and .model null follow autointerp.provider (as config/one_gpu.yaml "
            "does), so one key serves both"
        )
    ways.append(f"or run without LLM calls: --config 'autointerp={offline}'")
    return "autointerp: " + "; ".join(ways)
