"""`plan`: what a run will ask of the cluster, before it is submitted.

    python -m lorascope.workflow.plan --configfile config/paper.yaml \\
        [more overlays] --profile profiles/slurm [--strict]

Per rule: jobs, GPUs per job, modelled GPU memory per card against the card,
host RAM, FLOPs and hours per job at the stated throughput, GPU-hours; then
the total, and a warning for everything that does not fit (a node's GPUs,
the card less headroom, host RAM, the time limit). --strict exits 1 on a
warning. Job counts come from a Snakemake dry run (about 2 s), else from
the config. The model is `lorascope.workflow.resources`.
"""

from __future__ import annotations

import argparse
import copy
import re
import subprocess
import sys
from pathlib import Path

import yaml

from lorascope.core.config import validate
from lorascope.core.memory import GIB
from lorascope.workflow.cpucosts import (
    DOWNLOAD_BYTES_PER_S,
    LLM_CALL_S,
    STREAM_BYTES_PER_S,
)
from lorascope.workflow.resources import (
    BANDWIDTH_EFFICIENCY,
    DECODE_MFU,
    GPU_RULES,
    HEADROOM,
    MFU,
    Hardware,
    Needs,
    compute_seconds,
    rule_needs,
)
from lorascope.workflow.sweep import plan_split

__all__ = ["load_configs", "main", "merge", "plan_rows", "warnings"]

REPO = Path(__file__).resolve().parents[3]
# The GPU rules and the CPU rules with a formula (lorascope.workflow.cpucosts);
# every other rule is a light CPU job on the profile's defaults.
CPU_PLANNED = ("hub_fetch", "sft_dataset", "lora_features", "direct_effects")
CPU_PLANNED += ("autointerp_explain", "autointerp_assign", "autointerp_score")
PLANNED = (*GPU_RULES, *CPU_PLANNED)


def merge(base: dict, overlay: dict) -> dict:
    """Deep merge as Snakemake merges config files: dicts recursively, any
    other value replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_configs(paths) -> dict:
    """The validated config of `--configfile a.yaml b.yaml ...` (later files
    win), schema defaults filled."""
    config: dict = {}
    for path in paths:
        with open(path) as f:
            config = merge(config, yaml.safe_load(f) or {})
    return validate(config)


def dry_run_counts(paths, repo: Path = REPO) -> dict[str, int] | None:
    """Jobs per rule of `snakemake -n --forceall` for these config files, or
    None when the dry run fails."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet",
           "rules", "all", "--configfile", *map(str, paths)]  # fmt: skip
    try:
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout, re.M))
    if out.returncode or not counts:
        return None
    return {k: int(v) for k, v in counts.items() if k not in ("total", "all")}


def derived_counts(config: dict) -> dict[str, int]:
    """Jobs per planned rule, from the config (when no dry run)."""
    counts = dict.fromkeys(PLANNED, 1)
    for step in ("explain", "assign", "score"):
        counts[f"autointerp_{step}"] = 3  # lora, mlp, sae
    counts["eval_generate"] = 2 if config["eval"]["backend"] == "vllm" else 5
    if config["model"]["adapter"] is not None:
        del counts["train_rank1"]
    if config["model"]["full_finetune"] != "train":
        del counts["train_full"]
    if not config["hub"]["prefetch"]:
        del counts["hub_fetch"]
    if config["causal"]["accuracy_top_n"] == 0:
        del counts["feature_accuracy"]
    if not config["attribution"]["set_targets"]:
        del counts["behaviour_sets"]
    return counts


def plan_rows(config: dict, hw: Hardware, counts: dict[str, int]) -> list[dict]:
    """One row per planned rule in `counts`: its Needs, jobs and GPU-hours."""
    rows = []
    for rule in PLANNED:
        if rule not in counts:
            continue
        needs = rule_needs(rule, config, hw, REPO)
        jobs = counts[rule]
        hours = (needs.runtime_min or 0) / 60
        work_h = 1.5 * compute_seconds(needs, hw) * needs.work_share / 3600
        gpu_h = jobs * needs.gpus * (work_h + 0.25)
        rows.append(dict(rule=rule, jobs=jobs, needs=needs, hours=hours, gpu_h=gpu_h))
    return rows


def warnings(rows: list[dict], hw: Hardware) -> list[str]:
    """What does not fit the hardware."""
    out = []
    budget = hw.card_bytes * (1 - HEADROOM)
    for row in rows:
        n: Needs = row["needs"]
        if n.gpus > hw.gpus_per_node:
            out.append(f"{n.rule}: {n.gpus} GPUs > {hw.gpus_per_node} per node")
        if n.gpu_bytes > budget:
            out.append(
                f"{n.rule}: {n.gpu_bytes / GIB:.1f} GiB per card > "
                f"{budget / GIB:.1f} GiB ({hw.gpu_mem_gib:g} GiB less "
                f"{HEADROOM:.0%} headroom)"
            )
        if n.host_bytes > hw.host_mem_gb * 1e9:
            out.append(f"{n.rule}: host RAM {n.host_bytes / 1e9:.0f} GB > "
                       f"{hw.host_mem_gb:g} GB")  # fmt: skip
        limit = hw.limit_min(n.gpus)
        if n.runtime_min and limit and n.runtime_min > limit:
            where = "GPU" if n.gpus else "CPU"
            out.append(f"{n.rule}: {n.runtime_min / 60:.1f} h per job > the "
                       f"{where} partition's {limit / 60:g} h limit")  # fmt: skip
    return out


def render(rows: list[dict], hw: Hardware, source: str) -> str:
    head = (
        f"{'rule':<20} {'jobs':>4} {'GPUs':>4} {'GiB/card':>13} "
        f"{'host GB':>8} {'PFLOP/job':>10} {'h/job':>6} {'GPU-h':>7}  notes"
    )
    lines = [
        f"hardware: {hw.gpus_per_node} x {hw.gpu_name} ({hw.gpu_mem_gib:g} GiB, "
        f"{hw.gpu_tflops:g} TFLOP/s bf16) per node, {hw.max_runtime_min / 60:g} h "
        f"limit, {hw.host_mem_gb:g} GB host RAM; CPU jobs: "
        + (
            f"{hw.cpu_max_runtime_min / 60:g} h limit"
            if hw.cpu_max_runtime_min
            else "no time limit given"
        ),  # fmt: skip
        "CPU rules (cpucosts): hub downloads at "
        f"{DOWNLOAD_BYTES_PER_S / 1e6:g} MB/s, stored activations read at "
        f"{STREAM_BYTES_PER_S / 1e6:g} MB/s, {LLM_CALL_S:g} s per LLM call; "
        "other CPU rules: the profile's default resources",
        f"throughput: {MFU:.0%} of peak for forwards and training, "
        f"{DECODE_MFU:.0%} for token-by-token generation, or (if slower) "
        f"{BANDWIDTH_EFFICIENCY:.0%} of {hw.gpu_bandwidth_gbs:g} GB/s for the "
        "weights and KV cache each decode step reads; time x1.5 + 15 min load; "
        f"GPU memory must leave {HEADROOM:.0%} of the card free",
        f"jobs: {source}",
        "",
        head,
        "-" * len(head),
    ]
    for r in rows:
        n: Needs = r["needs"]
        mem = f"{n.gpu_bytes / GIB:5.1f}/{hw.gpu_mem_gib:g}" if n.gpus else "CPU"
        hours = f"{r['hours']:6.1f}" if n.runtime_min else f"{'-':>6}"
        lines.append(
            f"{n.rule:<20} {r['jobs']:>4} {n.gpus:>4} {mem:>13} "
            f"{n.host_bytes / 1e9:8.0f} {n.flops / 1e15:10.0f} {hours} "
            f"{r['gpu_h']:7.1f}  {'; '.join(n.notes)}".rstrip()
        )
    total = sum(r["gpu_h"] for r in rows)
    lines += ["-" * len(head), f"total GPU-hours: {total:.0f}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lorascope.workflow.plan")
    ap.add_argument("--configfile", nargs="+", required=True, type=Path)
    ap.add_argument("--profile", default="profiles/slurm", type=Path)
    ap.add_argument("--strict", action="store_true", help="exit 1 on a warning")
    ap.add_argument(
        "--no-dry-run",
        action="store_true",
        help="count jobs from the config, not a Snakemake dry run",
    )
    ap.add_argument("--doc", type=Path, help="also write it as this Markdown file")
    args = ap.parse_args(argv)
    config = load_configs(args.configfile)
    hw = Hardware.from_profile(args.profile)
    counts = None if args.no_dry_run else dry_run_counts(args.configfile)
    source = "snakemake -n --forceall" if counts else "derived from the config"
    rows = plan_rows(config, hw, counts or derived_counts(config))
    found = warnings(rows, hw)
    text = "\n".join(
        [f"plan: {' '.join(map(str, args.configfile))} on {args.profile}",
         render(rows, hw, source), *plan_split(config, rows),
         *(f"WARNING: {w}" for w in found)]
    )  # fmt: skip
    print(text)
    if args.doc:
        args.doc.write_text(DOC.format(
            configs=" ".join(map(str, args.configfile)), profile=args.profile,
            plan=text))  # fmt: skip
    return 1 if found and args.strict else 0


DOC = """# What the paper-scale run asks of the cluster

The `plan` command's output for `{configs}` on `{profile}`, written by
`make cluster-plan` (`python -m lorascope.workflow.plan --configfile {configs}
--profile {profile} --doc docs/cluster-plan.md`);
tests/workflow/test_plan.py fails when it is not the current output. Per rule:
jobs (from a Snakemake dry run), GPUs per job, modelled peak GPU memory per
card against the card, host RAM, FLOPs and hours per job at the stated
throughput, GPU-hours; CPU rules with a formula show their hours (other CPU
rules get the profile's defaults). The formulas:
`lorascope.workflow.rulecosts` (GPU rules), `lorascope.workflow.cpucosts`
(CPU rules), `lorascope.core.memory` (shapes, checked against transformers'
Qwen2 in tests/unit/test_resources.py). Estimates, not measurements: no GPU
run has checked them yet.

```text
{plan}
```
"""


if __name__ == "__main__":
    sys.exit(main())
