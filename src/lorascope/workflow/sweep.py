"""The sweep members of a run: LoRA rank x training seed x checkpoint step.

Used by `workflow/rules/common.smk` while the Snakefile is parsed (nothing
here imports torch), by `lorascope.workflow.preflight` and by the sweep jobs.

A *member* is one adapter the LoRA-dependent stages analyse. The default
member (rank `train.lora.r`, the top-level `seed`, the end of training) is
today's run and keeps today's paths (`results/{run}/...`); every other
member lives under `results/{run}/sweep/<tag>/...` with the same layout, so
each stage's rules serve every member through one `{member}` wildcard whose
value is "" or "sweep/<tag>/". Stages that do not depend on the adapter (the
data, the base model's and the full fine-tune's evaluation, the benchmarks)
exist once, under `results/{run}/`.

With `sweep` null (the default), the default member is the only one.
Checkpoint members (`sweep.checkpoints`) are the adapter of a trained
member (same rank and seed) saved at that step by the same training job:
a checkpoint costs no extra training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lorascope.evaluation.engines import shared_generation_jobs

__all__ = ["Member", "sweep_members", "member_pattern"]


@dataclass(frozen=True)
class Member:
    """One adapter of the sweep and where its artifacts live."""

    tag: str  # "r4-s1", "r4-s1-step20"; the default member's tag too
    rank: int
    seed: int
    step: int | None  # None: the end of training
    prefix: str  # "" (the default member) or "sweep/<tag>/"

    @property
    def trained(self) -> bool:
        """Whether a training job makes this member (else: a checkpoint)."""
        return self.step is None

    @property
    def parent(self) -> str:
        """The tag of the trained member a checkpoint member is saved by."""
        return f"r{self.rank}-s{self.seed}"

    def as_dict(self) -> dict:
        return {
            "tag": self.tag,
            "rank": self.rank,
            "seed": self.seed,
            "step": self.step,
            "prefix": self.prefix,
        }


def _axis(sweep: dict | None, key: str, default: list) -> list:
    values = (sweep or {}).get(key)
    return default if values is None else list(values)


def sweep_members(config: dict) -> list[Member]:
    """Every member of the run, the default member first.

    The grid is ranks x seeds, each trained to the end, plus one checkpoint
    member per trained member and step of `sweep.checkpoints`. An axis left
    null is the default member's value.
    """
    sweep = config.get("sweep")
    default_rank = int(config["train"]["lora"]["r"])
    default_seed = int(config["seed"])
    ranks = _axis(sweep, "ranks", [default_rank])
    seeds = _axis(sweep, "seeds", [default_seed])
    steps = _axis(sweep, "checkpoints", [])
    members = [
        Member(f"r{default_rank}-s{default_seed}", default_rank, default_seed, None, "")
    ]
    for rank in ranks:
        for seed in seeds:
            for step in [None, *steps]:
                tag = f"r{rank}-s{seed}" + ("" if step is None else f"-step{step}")
                if tag == members[0].tag:
                    continue
                members.append(Member(tag, int(rank), int(seed), step, f"sweep/{tag}/"))
    return members


def member_pattern(members: list[Member], which=None) -> str:
    """The `{member}` wildcard's regex: the members' prefixes ("" included for
    the default member), or only those `which(member)` keeps."""
    chosen = [m for m in members if which is None or which(m)]
    if not chosen:
        return "(?!)"  # matches nothing
    # A group, never "": Snakemake reads an empty constraint as none (.+).
    return "(?:" + "|".join(re.escape(m.prefix) for m in chosen) + ")"


def sweep_problems(config: dict, sft_rows: int | None = None) -> list[str]:
    """What is wrong with the sweep axes, knowable while the Snakefile is
    parsed; each message starts with its key. `sft_rows`: the rows of an
    existing data/sft.parquet (else the toy's n_sft, or unknown: the
    training job checks its steps before it trains). Ranks above a set
    eval.vllm.max_lora_rank are config errors (core.checks, beside
    train.lora.r's)."""
    from lorascope.core.names import is_toy
    from lorascope.train.steps import steps_problem, training_steps

    sweep = config["sweep"]
    if all(sweep[k] is None for k in ("ranks", "seeds", "checkpoints")):
        return []
    problems = []
    if config["model"]["adapter"] is not None:
        problems.append(
            "sweep: a sweep trains its adapters, but model.adapter names an "
            f"existing one ({config['model']['adapter']}): set model.adapter: "
            "null or leave sweep.ranks/seeds/checkpoints null"
        )
    if sweep["checkpoints"]:
        rows, where = sft_rows, "rows of data/sft.parquet"
        if rows is None and is_toy(config["data"]["dataset"]):
            rows, where = config["toy"]["n_sft"], "toy.n_sft rows"
        hp = config["train"]["rank1"]
        if rows is not None or hp["max_steps"] > 0:
            total = training_steps(rows or 0, hp)
            where = (
                "train.rank1.max_steps" if hp["max_steps"] > 0 else f"{rows} {where}"
            )
            problem = steps_problem(sweep["checkpoints"], total, where)
            problems += [problem] if problem else []
    return problems


# Rules run once per member (their paths start with {member}); every other
# rule runs once per run. eval_generate is both: the base's and the full
# fine-tune's generations are shared, each member's LoRAs get their own
# (the default member's share the base's engine under vLLM).
MEMBER_RULES = frozenset(
    "train_rank1 sweep_checkpoint components adapters_ablate eval_grade "
    "eval_summary eval_table extract_activations lora_features mlp_features "
    "train_sae sae_features kl_ablation feature_attribution behaviour_sets "
    "autointerp_explain autointerp_categories autointerp_assign autointerp_score "
    "autointerp_summary".split()
)


def plan_split(config: dict, rows: list[dict]) -> list[str]:
    """The plan's sweep lines: GPU-hours of the shared stages and of the
    members' own (`rows`: the plan's, with rule, jobs and gpu_h)."""
    members = sweep_members(config)
    if len(members) == 1:
        return []
    shared = own = 0.0
    shared_jobs = shared_generation_jobs(config["eval"], config["device"])
    for row in rows:
        if row["rule"] == "eval_generate" and row["jobs"]:
            part = row["gpu_h"] * min(shared_jobs, row["jobs"]) / row["jobs"]
            shared, own = shared + part, own + row["gpu_h"] - part
        elif row["rule"] in MEMBER_RULES:
            own += row["gpu_h"]
        else:
            shared += row["gpu_h"]
    trained = sum(m.trained for m in members)
    return [
        f"sweep: {len(members)} members ({trained} trained, "
        f"{len(members) - trained} checkpoints): " + ", ".join(m.tag for m in members),
        f"sweep GPU-hours: shared stages (data, base and full fine-tune "
        f"evaluation, their analyses) {shared:.0f}; the members' own stages "
        f"{own:.0f} ({own / len(members):.1f} per member on average); every "
        "eval_generate job is costed as the 4-variant base-and-LoRAs engine, an "
        "upper bound for a member's own engines (1 and 2 variants under vLLM)",
    ]
