"""The sweep stage's jobs from files to tables: one function per rule, each
taking explicit paths, so a rule (or `python -m lorascope.sweeps.job`) is a
thin call.

- `recovery_table` (rule `sweep_recovery`): Table 1 per member and per rank.
- `persistence_table` (rule `sweep_persistence`): the reference's features
  matched in every other member.
- `emergence_table` (rule `sweep_emergence`): when the matched features
  appear over the reference's checkpoints.

`members`: a list of `{"tag", "rank", "seed", "step" (None = end of
training), "root"}`; `reference`: the tag of the default member. Every
artifact a job reads is checked before any work, and a missing one fails
naming the file and its member.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from lorascope.core.io import atomic_path, write_parquet
from lorascope.sweeps.members import Member, SweepError, parse_members, require_files
from lorascope.sweeps.recovery import member_params, recovery_frame, recovery_markdown
from lorascope.sweeps.tables import (
    emergence,
    labels_frame,
    persistence_markdown,
    persistence_shares,
)

__all__ = ["emergence_table", "main", "persistence_table", "recovery_table"]

if TYPE_CHECKING:
    from lorascope.sweeps.persistence import MemberData

# persistence.KINDS; its module (torch) is imported by the job that needs it,
# so the recovery and emergence jobs start without torch
KINDS = ("lora", "sae")


def _write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def recovery_table(
    members: Sequence[Mapping],
    reference: str,
    shared_root: str | Path,
    benchmarks: Sequence[str],
    out_parquet: str | Path,
    out_md: str | Path,
    *,
    n_boot: int,
    ci: float = 0.95,
    seed: int = 0,
) -> pl.DataFrame:
    """Reads each member's `eval/rank1/{benchmark}.parquet` and adapter, the
    shared root's `eval/{base,full}/{benchmark}.parquet`; writes the table."""
    _, ms = parse_members(members, reference)
    if not benchmarks:
        raise SweepError("sweep recovery: no benchmarks (eval.benchmarks is empty)")
    shared = Path(shared_root)
    base_full = {
        (v, b): shared / f"eval/{v}/{b}.parquet"
        for v in ("base", "full")
        for b in benchmarks
    }
    require_files(
        [(None, p) for p in base_full.values()]
        + [(m, m.adapter_weights) for m in ms]
        + [(m, m.eval(b)) for m in ms for b in benchmarks]
    )
    frames = {
        b: {v: pl.read_parquet(base_full[v, b]) for v in ("base", "full")}
        | {m.tag: pl.read_parquet(m.eval(b)) for m in ms}
        for b in benchmarks
    }
    table = recovery_frame(
        ms, reference, frames, member_params(ms), n_boot=n_boot, ci=ci, seed=seed
    )
    write_parquet(table, out_parquet)
    _write_text(recovery_markdown(table, ci, n_boot), out_md)
    return table


def _member_files(
    m: Member, kinds: Sequence[str], is_ref: bool
) -> list[tuple[Member, Path]]:
    files = [m.manifest, m.components, m.adapter_weights]
    if "sae" in kinds:
        files += [m.sae / "cfg.json", m.features("sae")]
    if is_ref:
        files += [m.features(k) for k in kinds]
        files += [
            m.path(f"autointerp/{part}/{k}.parquet")
            for part in ("assignments", "explanations")
            for k in kinds
        ]
    return [(m, p) for p in dict.fromkeys(files)]


def _load(m: Member, kinds: Sequence[str], verify: bool, device: str) -> MemberData:
    from lorascope.core.saes import load_sae
    from lorascope.core.shards import open_shards
    from lorascope.sweeps.matching import adapter_factors
    from lorascope.sweeps.persistence import MemberData

    sae = alive = None
    if "sae" in kinds:
        sae = load_sae(m.sae, device=device)
        alive = pl.read_parquet(m.features("sae"))["latent"].to_list()
    return MemberData(
        m,
        open_shards(m.manifest, verify=verify),
        pl.read_parquet(m.components),
        adapter_factors(m.adapter),
        sae,
        alive,
    )


def persistence_table(
    members: Sequence[Mapping],
    reference: str,
    out_parquet: str | Path,
    out_md: str | Path,
    out_shares: str | Path,
    *,
    kinds: Sequence[str] = KINDS,
    threshold: float = 0.7,
    batch_size: int = 4096,
    max_gib: float = 8.0,
    verify: bool = True,
    device: str = "cpu",
) -> pl.DataFrame:
    """Reads every member's `activations/manifest.json` (+ shards),
    `components.parquet`, adapter, and for kind sae `sae/model` and
    `features/sae/features.parquet`; the reference's
    `features/{kind}/features.parquet` and `autointerp/{assignments,
    explanations}/{kind}.parquet`. Writes the rows, the markdown and the
    shares table."""
    from lorascope.sweeps.persistence import persistence_frame

    ref, ms = parse_members(members, reference)
    others = [m for m in ms if m.tag != reference]
    require_files([f for m in ms for f in _member_files(m, kinds, m.tag == reference)])
    data = {m.tag: _load(m, kinds, verify, device) for m in ms}
    features = {k: pl.read_parquet(ref.features(k)) for k in kinds}
    labels = {
        k: labels_frame(
            pl.read_parquet(ref.path(f"autointerp/assignments/{k}.parquet")),
            pl.read_parquet(ref.path(f"autointerp/explanations/{k}.parquet")),
        )
        for k in kinds
    }
    rows = persistence_frame(
        data[reference],
        [data[m.tag] for m in others],
        features,
        labels,
        kinds=kinds,
        threshold=threshold,
        batch_size=batch_size,
        max_gib=max_gib,
        device=device,
    )
    shares = persistence_shares(rows)
    write_parquet(rows, out_parquet)
    write_parquet(shares, out_shares)
    _write_text(persistence_markdown(shares, ref, threshold), out_md)
    return rows


def emergence_table(
    members: Sequence[Mapping],
    reference: str,
    persistence: str | Path,
    out_curve: str | Path,
    out_features: str | Path,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Reads persistence.parquet; writes the curve and the first steps."""
    ref, ms = parse_members(members, reference)
    require_files([(None, Path(persistence))])
    curve, first = emergence(pl.read_parquet(persistence), ms, ref)
    write_parquet(curve, out_curve)
    write_parquet(first, out_features)
    return curve, first


JOBS = {
    "recovery": recovery_table,
    "persistence": persistence_table,
    "emergence": emergence_table,
}


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m lorascope.sweeps.job {recovery,persistence,emergence}
    --spec spec.json`: the spec holds the function's keyword arguments."""
    parser = argparse.ArgumentParser(prog="python -m lorascope.sweeps.job")
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--spec", required=True, help="JSON file of keyword arguments")
    args = parser.parse_args(argv)
    JOBS[args.job](**json.loads(Path(args.spec).read_text()))


if __name__ == "__main__":
    main()
