"""The members of a sweep and where their artifacts live.

A member is one trained adapter of the sweep (rank, seed, and a checkpoint
step or the end of training). Its LoRA-dependent artifacts live under its
own root (`results/{run}/` for the reference member, the config's default,
`results/{run}/sweep/<tag>/` for the others); the base model's and the full
fine-tune's evaluations are shared and live under the run's root. Every job
of this stage takes the member list as plain dicts (what the rule passes)
and checks it before reading anything, so a missing artifact fails naming
its file before any work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Member",
    "SweepError",
    "parse_members",
    "require_files",
]


class SweepError(ValueError):
    """The sweep's members or their artifacts are not what the analysis needs."""


@dataclass(frozen=True)
class Member:
    """One adapter of the sweep."""

    tag: str
    """Its name, e.g. `r4-s2` or `r1-s1-step20`."""
    rank: int
    """The LoRA rank r."""
    seed: int
    """The training seed."""
    step: int | None
    """The checkpoint's training step; None = the end of training."""
    root: Path
    """The member's results dir (`results/x/` or `results/x/sweep/<tag>/`)."""

    def path(self, relative: str) -> Path:
        return self.root / relative

    # The artifacts this stage reads, relative to the member root.
    @property
    def adapter(self) -> Path:
        return self.path("train/rank1/adapter")

    @property
    def adapter_weights(self) -> Path:
        return self.adapter / "adapter_model.safetensors"

    @property
    def components(self) -> Path:
        return self.path("components.parquet")

    @property
    def manifest(self) -> Path:
        return self.path("activations/manifest.json")

    @property
    def sae(self) -> Path:
        return self.path("sae/model")

    def features(self, kind: str) -> Path:
        return self.path(f"features/{kind}/features.parquet")

    def eval(self, benchmark: str, variant: str = "rank1") -> Path:
        return self.path(f"eval/{variant}/{benchmark}.parquet")


def _field(raw: Mapping, key: str, i: int, kinds: tuple[type, ...]):
    if key not in raw:
        raise SweepError(f"sweep member {i} ({dict(raw)}): no {key!r}")
    value = raw[key]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise SweepError(
            f"sweep member {i}: {key} = {value!r} is not "
            + " or ".join(k.__name__ for k in kinds)
        )
    return value


def parse_members(
    members: Sequence[Mapping], reference: str
) -> tuple[Member, list[Member]]:
    """(the reference member, every member in the given order) from the dicts
    a rule passes: `{"tag", "rank", "seed", "step" (None = the end of
    training), "root"}`. Fails on an empty list, a duplicate tag, a bad
    field, or a reference tag that is not a member, naming it."""
    if not members:
        raise SweepError("the sweep has no members: nothing to compare")
    out = []
    for i, raw in enumerate(members):
        step = raw.get("step")
        if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
            raise SweepError(f"sweep member {i}: step = {step!r} is not an int or null")
        rank = _field(raw, "rank", i, (int,))
        if rank < 1:
            raise SweepError(f"sweep member {i}: rank = {rank} is below 1")
        out.append(
            Member(
                tag=_field(raw, "tag", i, (str,)),
                rank=rank,
                seed=_field(raw, "seed", i, (int,)),
                step=step,
                root=Path(_field(raw, "root", i, (str, Path))),
            )
        )
    tags = [m.tag for m in out]
    dupes = sorted({t for t in tags if tags.count(t) > 1})
    if dupes:
        raise SweepError(f"sweep members: duplicate tag(s) {dupes}")
    if reference not in tags:
        raise SweepError(
            f"sweep reference {reference!r} is not a member (members: {tags})"
        )
    return out[tags.index(reference)], out


def require_files(checks: Iterable[tuple[Member | None, Path]]) -> None:
    """Fail naming every missing artifact (and whose it is) at once, before
    any work: a sweep job reads many members' files, and a rerun should not
    discover them one at a time."""
    missing = [
        f"{p} (member {m.tag})" if m is not None else str(p)
        for m, p in checks
        if not Path(p).exists()
    ]
    if missing:
        raise SweepError(
            "sweep analysis: missing artifact(s):\n  " + "\n  ".join(missing)
        )
