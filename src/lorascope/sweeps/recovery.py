"""Recovery against rank: Table 1 per sweep member and per rank (rule
`sweep_recovery`).

Table 1's recovery = (rank1 - base) / (full - base) with the paired
percentile bootstrap over problems (`lorascope.evaluation.tables`), computed
for every member's adapter against the shared base model and full
fine-tune. All members, base and full go through one bootstrap call, so
every interval (per member and per rank) comes from the same resampled
problems: paired across ranks, seeds and checkpoints.

Per rank, the end-of-training members (step None) of that rank are pooled
over seeds: their correctness per problem is averaged over seeds (a
fraction in [0, 1]) and that average goes through the same paired bootstrap
as one more variant. So the pooled accuracy is the mean over seeds of the
seeds' accuracies, the pooled recovery is (that mean - base) / (full -
base), and its interval reflects the resampling of problems only, with the
seeds held fixed: it does not include seed-to-seed variation, which the
`seed_min` / `seed_max` columns show (the range of the seeds' own
recoveries; with two seeds an interval over seeds would mean little).
Checkpoint members (a step) have their own rows and are not pooled.

Trainable parameters are counted from the member's adapter safetensors
header (`evaluation.tables.safetensors_numel`): no weights are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from lorascope.evaluation.tables import (
    bootstrap_table,
    correct_matrix,
    safetensors_numel,
)
from lorascope.sweeps.members import Member, SweepError

__all__ = ["RECOVERY_COLUMNS", "member_params", "recovery_frame", "recovery_markdown"]

RECOVERY_COLUMNS = [
    "level",
    "tag",
    "reference",
    "rank",
    "seed",
    "step",
    "n_seeds",
    "trainable_params",
    "benchmark",
    "n",
    "accuracy",
    "accuracy_lo",
    "accuracy_hi",
    "base",
    "base_lo",
    "base_hi",
    "full",
    "full_lo",
    "full_hi",
    "recovery",
    "recovery_lo",
    "recovery_hi",
    "recovery_defined",
    "seed_min",
    "seed_max",
]


def _member_key(tag: str) -> str:
    return f"member:{tag}"


def _rank_key(rank: int) -> str:
    return f"rank:{rank}"


def recovery_frame(
    members: Sequence[Member],
    reference: str,
    frames: dict[str, dict[str, pl.DataFrame]],
    params: dict[str, int],
    *,
    n_boot: int,
    ci: float = 0.95,
    seed: int = 0,
) -> pl.DataFrame:
    """Recovery per member x benchmark (`level` member) and per rank x
    benchmark (`level` rank: end-of-training members pooled over seeds).

    `frames[benchmark]` holds the graded eval frames `base`, `full` and one
    per member tag; `params[tag]` is the member's trainable parameters.
    """
    if not members:
        raise SweepError("the sweep has no members: nothing to tabulate")
    ends = [m for m in members if m.step is None]
    ranks = sorted({m.rank for m in ends})
    correct: dict[str, dict[str, np.ndarray]] = {}
    for bench, by_name in frames.items():
        names = ["base", "full", *(m.tag for m in members)]
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SweepError(f"{bench}: no graded samples for {missing}")
        _, matrix = correct_matrix({n: by_name[n] for n in names}, bench)
        row = dict(zip(names, matrix, strict=True))
        variants = {"base": row["base"], "full": row["full"]}
        variants |= {_member_key(m.tag): row[m.tag] for m in members}
        for r in ranks:  # per problem, the share of the rank's seeds correct
            seeds = [row[m.tag].astype(float) for m in ends if m.rank == r]
            variants[_rank_key(r)] = np.mean(seeds, axis=0)
        correct[bench] = variants
    keys = [_member_key(m.tag) for m in members] + [_rank_key(r) for r in ranks]
    table = bootstrap_table(
        correct,
        [(f"rec|{k}", k, "full", "base") for k in keys],
        n_boot=n_boot,
        ci=ci,
        seed=seed,
    )
    rows = []
    for t in table.iter_rows(named=True):
        shared = {
            "benchmark": t["benchmark"],
            "n": t["n"],
            **{
                f"{v}{s}": t[f"{v}{s}"]
                for v in ("base", "full")
                for s in ("", "_lo", "_hi")
            },
        }
        per_tag = {}
        for m in members:
            k = _member_key(m.tag)
            per_tag[m.tag] = t[f"rec|{k}"]
            rows.append(
                _row(t, k, shared)
                | {
                    "level": "member",
                    "tag": m.tag,
                    "reference": m.tag == reference,
                    "rank": m.rank,
                    "seed": m.seed,
                    "step": m.step,
                    "n_seeds": 1,
                    "trainable_params": params[m.tag],
                    "seed_min": None,
                    "seed_max": None,
                }
            )
        for r in ranks:
            of_rank = [m for m in ends if m.rank == r]
            recs = [per_tag[m.tag] for m in of_rank if per_tag[m.tag] is not None]
            counts = {params[m.tag] for m in of_rank}
            rows.append(
                _row(t, _rank_key(r), shared)
                | {
                    "level": "rank",
                    "tag": f"rank-{r}",
                    "reference": any(m.tag == reference for m in of_rank),
                    "rank": r,
                    "seed": None,
                    "step": None,
                    "n_seeds": len(of_rank),
                    # same rank, same target modules: the same count; the
                    # mean keeps the column defined if a member differs
                    "trainable_params": int(round(np.mean(sorted(counts)))),
                    "seed_min": min(recs) if recs else None,
                    "seed_max": max(recs) if recs else None,
                }
            )
    schema = {
        "level": pl.String,
        "tag": pl.String,
        "reference": pl.Boolean,
        "rank": pl.Int64,
        "seed": pl.Int64,
        "step": pl.Int64,
        "n_seeds": pl.Int64,
        "trainable_params": pl.Int64,
        "benchmark": pl.String,
        "n": pl.Int64,
    }
    schema |= {c: pl.Float64 for c in RECOVERY_COLUMNS if c not in schema}
    return pl.DataFrame(rows, schema=schema).select(RECOVERY_COLUMNS)


def _row(t: dict, key: str, shared: dict) -> dict:
    rec = f"rec|{key}"
    return shared | {
        "accuracy": t[key],
        "accuracy_lo": t[f"{key}_lo"],
        "accuracy_hi": t[f"{key}_hi"],
        "recovery": t[rec],
        "recovery_lo": t[f"{rec}_lo"],
        "recovery_hi": t[f"{rec}_hi"],
        "recovery_defined": t[f"{rec}_defined"],
    }


def member_params(members: Sequence[Member]) -> dict[str, int]:
    """Trainable parameters per member, from its adapter's safetensors header."""
    return {m.tag: safetensors_numel(m.adapter_weights) for m in members}


def _pct(v, lo, hi) -> str:
    if v is None:
        return "undefined"
    text = f"{100 * v:.1f}%"
    return text + (f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else "")


def _range(lo, hi) -> str:
    return "—" if lo is None else f"{100 * lo:.1f} to {100 * hi:.1f}%"


def recovery_markdown(table: pl.DataFrame, ci: float, n_boot: int) -> str:
    """The human view: one table per level, 'value [lo, hi]' cells."""
    from lorascope.core.io import to_markdown

    parts = ["# Recovery against rank: Table 1 per sweep member and per rank\n"]
    for level, title in (("rank", "Per rank (seeds pooled)"), ("member", "Per member")):
        sub = table.filter(pl.col("level") == level).sort(
            "rank", "seed", "step", "benchmark", nulls_last=True
        )
        view = pl.DataFrame(
            {
                "tag": sub["tag"],
                "rank": sub["rank"],
                **(
                    {"seeds": sub["n_seeds"]}
                    if level == "rank"
                    else {"seed": sub["seed"], "step": sub["step"]}
                ),
                "params": [f"{p:,}" for p in sub["trainable_params"]],
                "benchmark": sub["benchmark"],
                "n": sub["n"],
                "accuracy": [
                    _pct(r["accuracy"], r["accuracy_lo"], r["accuracy_hi"])
                    for r in sub.iter_rows(named=True)
                ],
                "recovery": [
                    _pct(r["recovery"], r["recovery_lo"], r["recovery_hi"])
                    for r in sub.iter_rows(named=True)
                ],
                **(
                    {
                        "seed range": [
                            _range(r["seed_min"], r["seed_max"])
                            for r in sub.iter_rows(named=True)
                        ]
                    }
                    if level == "rank"
                    else {}
                ),
            }
        )
        parts.append(f"## {title}\n\n{to_markdown(view)}")
    base = table.unique("benchmark", maintain_order=True)
    shared = "; ".join(
        f"{r['benchmark']}: base {_pct(r['base'], r['base_lo'], r['base_hi'])}, "
        f"full {_pct(r['full'], r['full_lo'], r['full_hi'])}"
        for r in base.iter_rows(named=True)
    )
    parts.append(
        f"Recovery = (rank-r accuracy - base) / (full - base), Table 1's formula. "
        f"Brackets: {ci:.0%} paired percentile bootstrap over problems ({n_boot} "
        "resamples, the same for every member, rank, base and full). A rank's "
        "row pools its end-of-training seeds: the accuracy is the mean over "
        "seeds, its interval resamples problems with the seeds fixed (seed "
        "variation is the 'seed range' column: the seeds' own recoveries). "
        "'undefined': the full fine-tune gains nothing over the base.\n\n"
        f"Shared: {shared}.\n"
    )
    return "\n".join(parts)
