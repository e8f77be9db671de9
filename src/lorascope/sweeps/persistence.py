"""Features that persist: the reference member's LoRA directions and SAE
features matched in every other member (rule `sweep_persistence`).

One pass over the shards of every member at once (`streams.aligned_batches`:
the same tokens, checked) accumulates, per other member and kind, the
correlation of each reference unit with each of the member's units (LoRA:
the scalars, the shard columns; SAE: the alive latents' codes, each member
encoded by its own SAE). Activation correlation on the same tokens is always
defined, across seeds, ranks and checkpoints alike. A reference unit is
matched one to one (`matching.one_to_one` on |corr|) and persists when its
partner's |corr| reaches the threshold.

The threshold (default 0.7): |r| >= 0.7 means the partner explains about
half of the unit's variance on these tokens (r^2 = 0.49), and a value near
0.7 is the cut-off used in earlier work for calling SAE latents shared
across seeds; below it the two units disagree on most tokens.

Alongside, where the spaces align, the decoder cosines
(`matching.lora_cosines`, `matching.sae_cosines`) and, for LoRA, the
rotation-invariant multiple correlation with the partner module's r slots
(`matching.subspace_r`).

Rows (persistence.parquet): one per (other member, kind, reference feature
of features.parquet), with the reference feature's category and
monosemanticity class (autointerp), so the shares break down by them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
import torch

from lorascope.core.contexts import lora_units
from lorascope.sae.features import encode_alive
from lorascope.sweeps.matching import (
    lora_cosines,
    one_to_one,
    sae_cosines,
    subspace_r,
)
from lorascope.sweeps.members import Member, SweepError
from lorascope.sweeps.streams import CrossMoments, GroupMoments, aligned_batches

__all__ = ["KINDS", "MemberData", "persistence_frame", "matrix_gib"]

KINDS = ("lora", "sae")


class MemberData:
    """What the pass needs of one member, read by the job: shards, component
    table, adapter factors (`matching.adapter_factors`) and, for kind sae, the
    SAE and its alive latents (features/sae/features.parquet `latent`)."""

    def __init__(
        self,
        member: Member,
        shards,
        components: pl.DataFrame,
        factors: dict | None = None,
        sae=None,
        alive: Sequence[int] | None = None,
    ):
        self.member = member
        self.shards = shards
        self.components = components
        self.factors = factors
        self.sae = sae
        self.alive = torch.as_tensor(list(alive or []), dtype=torch.int64)
        if shards.n_components != components.height:
            raise SweepError(
                f"member {member.tag}: {member.manifest} has {shards.n_components} "
                f"scalars, {member.components} {components.height} rows"
            )

    def width(self, kind: str) -> int:
        return self.components.height if kind == "lora" else len(self.alive)

    def units(self, kind: str, acts_BC: torch.Tensor) -> torch.Tensor:
        if kind == "lora":
            return acts_BC
        return encode_alive(
            self.sae, acts_BC.float(), self.alive
        )  # on the SAE's device

    def groups(self) -> list[np.ndarray]:
        """Scalar indices per LoRA module (its r slots), in table order."""
        names = self.components["name"].to_list()
        order = list(dict.fromkeys(names))
        return [np.flatnonzero(np.array(names) == n) for n in order]


def matrix_gib(
    ref: MemberData, others: Sequence[MemberData], kinds: Sequence[str]
) -> float:
    """GiB the float64 cross sums take (the pass's memory besides a batch)."""
    cells = sum(ref.width(k) * o.width(k) for o in others for k in kinds)
    return 8 * cells / 2**30


def _accumulate(ref, others, kinds, batch_size, device):
    cross = {
        (o.member.tag, k): CrossMoments(ref.width(k), o.width(k), device)
        for o in others
        for k in kinds
    }
    lora_ref = CrossMoments(ref.width("lora"), 0)  # the reference's own scalar spreads
    within = {o.member.tag: GroupMoments(o.groups()) for o in others if "lora" in kinds}
    sets = {ref.member.tag: ref.shards} | {o.member.tag: o.shards for o in others}
    for batch in aligned_batches(sets, ref.member.tag, batch_size):
        ref_units = {k: ref.units(k, batch[ref.member.tag]) for k in kinds}
        lora_ref.update(batch[ref.member.tag], batch[ref.member.tag][:, :0])
        for o in others:
            acts = batch[o.member.tag]
            for k in kinds:
                cross[o.member.tag, k].update(ref_units[k], o.units(k, acts))
            if o.member.tag in within:
                within[o.member.tag].update(acts)
    return cross, lora_ref, within


def persistence_frame(
    ref: MemberData,
    others: Sequence[MemberData],
    features: Mapping[str, pl.DataFrame],
    labels: Mapping[str, pl.DataFrame],
    *,
    kinds: Sequence[str] = KINDS,
    threshold: float = 0.7,
    batch_size: int = 4096,
    max_gib: float = 8.0,
    device: str = "cpu",
) -> pl.DataFrame:
    """One row per (other member, kind, reference feature).

    `features[kind]`: the reference's features.parquet; `labels[kind]`:
    `feature, category, subcategory, classification` of the reference
    (`labels_frame`).
    """
    if not 0 < threshold <= 1:
        raise SweepError(f"sweep persistence: threshold {threshold} is not in (0, 1]")
    if batch_size < 1:
        raise SweepError(f"sweep persistence: batch_size {batch_size} is below 1")
    if not others:
        raise SweepError(
            "sweep persistence: no member besides the reference to compare"
        )
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SweepError(
            f"sweep persistence: unknown kind(s) {bad}; known: {list(KINDS)}"
        )
    gib = matrix_gib(ref, others, kinds)
    if gib > max_gib:
        raise SweepError(
            f"sweep persistence: the correlation sums need {gib:.1f} GiB (float64, "
            f"reference units x each member's units), above the limit of {max_gib} GiB"
        )
    cross, lora_ref, within = _accumulate(ref, others, kinds, batch_size, device)
    ref_std = lora_ref.std()[0] if "lora" in kinds else None
    kinds = [k for k in KINDS if k in kinds]  # lora first: the SAE cosines use it
    parts = []
    for o in others:
        lora_corr = std_o = None
        for k in kinds:
            moments = cross[o.member.tag, k]
            corr = moments.corr()
            if k == "lora":
                lora_corr, std_o = corr, moments.std()[1]
            match, value = one_to_one(np.abs(corr))
            cols = {
                "match_unit": match,
                "corr": np.array(
                    [corr[p, q] if q >= 0 else np.nan for p, q in enumerate(match)]
                ),
                "abs_corr": value,
                "best_abs_corr": np.abs(corr).max(axis=1)
                if corr.shape[1]
                else np.full(corr.shape[0], np.nan),
            }
            if k == "lora":
                cols |= _lora_extras(ref, o, corr, match, within[o.member.tag])
                labels_o = lora_units(o.components)["label"].to_list()
            else:
                cols |= _sae_extras(ref, o, lora_corr, ref_std, std_o, match)
                labels_o = [f"sae.{int(x)}" for x in o.alive]
            units = _ref_units(k, features[k], ref)
            rows = pl.DataFrame({c: np.asarray(v)[units] for c, v in cols.items()})
            rows = rows.with_columns(
                match_label=pl.Series(
                    _match_labels(labels_o, rows, features[k], k), dtype=pl.String
                ),
            )
            head = (
                features[k]
                .select("feature", "label")
                .with_columns(unit=pl.Series(units))
            )
            m = o.member
            parts.append(
                pl.concat([head, rows], how="horizontal")
                .join(labels[k], on="feature", how="left")
                .with_columns(
                    member=pl.lit(m.tag),
                    rank=pl.lit(m.rank, pl.Int64),
                    seed=pl.lit(m.seed, pl.Int64),
                    step=pl.lit(m.step, pl.Int64),
                    kind=pl.lit(k),
                    threshold=pl.lit(threshold),
                    n_tokens=pl.lit(moments.n, pl.Int64),
                    matched=pl.col("abs_corr").fill_nan(None).fill_null(0.0)
                    >= threshold,
                )
            )
    out = pl.concat(parts, how="diagonal_relaxed")
    absent = [c for c in COLUMNS if c not in out.columns]  # another kind's columns
    out = out.with_columns(
        pl.lit(None, pl.Int64 if c == "dec_match" else pl.Float64).alias(c)
        for c in absent
    ).select(COLUMNS)
    # undefined (no partner, no shared space) is null, never NaN or -1
    return out.with_columns(
        pl.col(pl.Float64).fill_nan(None),
        *(pl.when(pl.col(c) >= 0).then(pl.col(c)) for c in ("match_unit", "dec_match")),
    )


COLUMNS = [
    "member",
    "rank",
    "seed",
    "step",
    "kind",
    "feature",
    "label",
    "unit",
    "category",
    "subcategory",
    "classification",
    "match_unit",
    "match_label",
    "corr",
    "abs_corr",
    "matched",
    "best_abs_corr",
    "r_subspace",
    "read_cos",
    "write_cos",
    "read_cos_best",
    "write_cos_best",
    "dec_cos",
    "dec_match",
    "dec_match_cos",
    "threshold",
    "n_tokens",
]


def _ref_units(kind: str, features: pl.DataFrame, ref: MemberData) -> np.ndarray:
    """Each reference feature's unit: its scalar (lora) or alive latent (sae)."""
    if kind == "lora":
        units = features["component"].to_numpy()
        bad = (units < 0) | (units >= ref.width("lora"))
    else:
        where = {int(x): i for i, x in enumerate(ref.alive)}
        units = np.array([where.get(int(x), -1) for x in features["latent"]])
        bad = units < 0
    if bad.any():
        raise SweepError(
            f"{ref.member.features(kind)}: feature(s) "
            f"{features['feature'].to_numpy()[bad][:8].tolist()} name no unit of "
            f"the reference member's {kind} ({ref.width(kind)} units)"
        )
    return units


def _match_labels(labels_o, rows, features, kind) -> list[str | None]:
    """The partner's label; for a signed LoRA feature (polarity both or
    dominant: `sign` +1/-1) with the side that matches it, the feature's
    sign times the correlation's (`L3.gate+` may be another seed's
    `L3.gate-`: a direction and its negation are the same adapter)."""
    signs = features["sign"].to_list() if "sign" in features.columns else None
    out = []
    for i, (q, c) in enumerate(zip(rows["match_unit"], rows["corr"], strict=True)):
        if q < 0:
            out.append(None)
            continue
        side = ""
        if kind == "lora" and signs is not None and signs[i]:
            side = "+" if signs[i] * c >= 0 else "-"
        out.append(labels_o[q] + side)
    return out


def _lora_extras(ref, o, corr, match, within) -> dict:
    names_o = list(dict.fromkeys(o.components["name"].to_list()))
    group_of = [
        names_o.index(n) if n in names_o else -1 for n in ref.components["name"]
    ]
    groups = o.groups()
    r = subspace_r(corr, group_of, [within.corr(i) for i in range(len(groups))], groups)
    out = {"r_subspace": r}
    if ref.factors is not None and o.factors is not None:
        out |= lora_cosines(ref.components, o.components, ref.factors, o.factors, match)
    return out


def _sae_extras(ref, o, lora_corr, ref_std, std_o, match) -> dict:
    """SAE decoder cosines when both SAEs read the same scalar layout."""
    n = ref.width("sae")
    out = {
        "dec_cos": np.full(n, np.nan),
        "dec_match": np.full(n, -1),
        "dec_match_cos": np.full(n, np.nan),
    }
    same = ref.components.select("name", "rank_slot").equals(
        o.components.select("name", "rank_slot")
    )
    if not same or lora_corr is None:
        return out  # no shared coordinates (or no scalar statistics: kind lora off)
    c = ref.width("lora")
    sign = np.sign(np.diag(lora_corr[:, :c]))
    sign[sign == 0] = 1.0
    w_ref = ref.sae.W_dec[ref.alive]
    w_o = o.sae.W_dec[o.alive]
    cos = sae_cosines(w_ref, w_o, ref_std, std_o, sign)
    out["dec_cos"] = np.array(
        [cos[p, q] if q >= 0 else np.nan for p, q in enumerate(match)]
    )
    dm, dv = one_to_one(cos)
    out["dec_match"], out["dec_match_cos"] = dm, dv
    return out
