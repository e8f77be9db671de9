"""Streamed max-activating examples and per-feature statistics.

Used by rule `extract_activations` (LoRA components and MLP neurons, during
the single extraction pass) and by the SAE feature rule. Nothing here ever
holds more than one batch of activations: the running state is `[F, k]`.

Polarity. A LoRA scalar (and an MLP neuron) is signed, and the two signs mean
different things (the paper's dashboards colour them differently), so by
default each unit becomes two features: `+` ranks by a and `-` ranks by -a
(`signed_features`, polarity `both`). `abs` ranks by |a| (one feature per
unit); `pos` keeps a as is (SAE latents, which are non-negative).
Feature f of unit u is `2u` (+) and `2u + 1` (-) under `both`, `u` otherwise.
Every value stored here is sign-adjusted: larger = stronger. Polarity
`dominant` (`stream_polarity`) streams like `both`; the feature tables then
keep, per unit, the side whose largest activation is larger.

Real activations only. The running state keeps the k largest values even when
a feature fired fewer than k times, so `to_frame` keeps only entries above
`min_value` (default 0: strictly positive, sign-adjusted). Top-k then filter
equals filter then top-k, so the threshold needs no re-extraction; a feature
that fired 3 times has exactly 3 rows, one that never fired has none.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

__all__ = [
    "POLARITIES",
    "FeatureSlots",
    "CONFIG_POLARITIES",
    "StreamingTopK",
    "FeatureStats",
    "signed_features",
    "feature_units",
    "stream_polarity",
]

POLARITIES = ("both", "abs", "pos")
# Config polarities: `dominant` is streamed as `both` and resolved per unit.
CONFIG_POLARITIES = ("both", "abs", "dominant")


def stream_polarity(polarity: str) -> str:
    """The polarity a config value is streamed with (`dominant` -> `both`)."""
    if polarity == "dominant":
        return "both"
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {CONFIG_POLARITIES}: {polarity!r}")
    return polarity


def signed_features(values_TU: torch.Tensor, polarity: str) -> torch.Tensor:
    """Unit activations [T, U] -> feature activations [T, F] (see module doc)."""
    if polarity == "both":
        return torch.stack([values_TU, -values_TU], dim=-1).flatten(-2)  # (T, 2U)
    if polarity == "abs":
        return values_TU.abs()
    if polarity == "pos":
        return values_TU
    raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")


def feature_units(n_units: int, polarity: str) -> tuple[np.ndarray, np.ndarray]:
    """(unit, sign) per feature: sign +1/-1 under `both`, 0 for abs, +1 for pos."""
    u = np.arange(n_units)
    if polarity == "both":
        return np.repeat(u, 2), np.tile(np.array([1, -1], dtype=np.int8), n_units)
    if polarity == "abs":
        return u, np.zeros(n_units, dtype=np.int8)
    if polarity == "pos":
        return u, np.ones(n_units, dtype=np.int8)
    raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")


class FeatureSlots:
    """Per-feature `[F, k]` state tensors, attributes `{name}_FK` for each
    name of `SLOTS` (name -> dtype), saved, loaded and merged alike.

    Shared by `StreamingTopK` and `lorascope.core.sample.StreamingSample`;
    each defines `_merge(*[F, 2k] tensors in SLOTS order)`, which keeps k.
    """

    SLOTS: dict[str, torch.dtype] = {}

    def _slot(self, name: str) -> torch.Tensor:
        return getattr(self, f"{name}_FK")

    def _slots(self) -> list[torch.Tensor]:
        return [self._slot(name) for name in self.SLOTS]

    def merge(self, other) -> None:
        """Fold in another state over disjoint tokens (shards, ranks)."""
        if (other.n_features, other.k) != (self.n_features, self.k):
            raise ValueError("merge: states differ in n_features or k")
        self._merge(
            *(
                torch.cat([a, b.to(self.device)], 1)
                for a, b in zip(self._slots(), other._slots(), strict=True)
            )
        )

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {prefix + name: self._slot(name).cpu() for name in self.SLOTS}

    @classmethod
    def from_state_dict(
        cls, state: dict, prefix: str = "", device: torch.device | str = "cpu"
    ):
        n, k = state[prefix + next(iter(cls.SLOTS))].shape
        out = cls(n, k, device)
        for name, dtype in cls.SLOTS.items():
            setattr(out, f"{name}_FK", state[prefix + name].to(out.device, dtype))
        return out


class StreamingTopK(FeatureSlots):
    """The k largest values per feature seen so far, with their (doc, pos).

    `update` takes a batch `[T, F]`; the state stays on `device`. Equal to a
    brute-force top-k over everything streamed (ties in arbitrary order).
    """

    SLOTS = {"values": torch.float32, "doc": torch.int64, "pos": torch.int64}

    def __init__(self, n_features: int, k: int, device: torch.device | str = "cpu"):
        if k < 1 or n_features < 0:
            raise ValueError(f"need k >= 1 and n_features >= 0 (k={k})")
        self.n_features, self.k, self.device = n_features, k, torch.device(device)
        self.values_FK = torch.full((n_features, k), -torch.inf, device=self.device)
        self.doc_FK = torch.full((n_features, k), -1, device=self.device)
        self.pos_FK = torch.full((n_features, k), -1, device=self.device)

    def _merge(self, v_FK2, doc_FK2, pos_FK2) -> None:
        top_FK, idx_FK = v_FK2.topk(self.k, dim=1)  # sorted, descending
        self.values_FK = top_FK
        self.doc_FK = doc_FK2.gather(1, idx_FK)
        self.pos_FK = pos_FK2.gather(1, idx_FK)

    def update(
        self, values_TF: torch.Tensor, doc_T: torch.Tensor, pos_T: torch.Tensor
    ) -> None:
        T, F = values_TF.shape
        if F != self.n_features:
            raise ValueError(f"update: {F} features, expected {self.n_features}")
        if T == 0:
            return
        # A batch's own top-k first: the merge then sorts [F, 2k], not [F, T + k].
        v_KF, i_KF = values_TF.to(self.device, torch.float32).topk(
            min(self.k, T), dim=0
        )
        doc_KF = doc_T.to(self.device, torch.int64)[i_KF]
        pos_KF = pos_T.to(self.device, torch.int64)[i_KF]
        self._merge(
            torch.cat([self.values_FK, v_KF.T], 1),
            torch.cat([self.doc_FK, doc_KF.T], 1),
            torch.cat([self.pos_FK, pos_KF.T], 1),
        )

    def to_frame(self, min_value: float = 0.0) -> pl.DataFrame:
        """topk.parquet: feature, rank (0 = strongest), doc, pos, value.

        Only entries with value > `min_value` (sign-adjusted): slots never
        filled and fillers at or below the threshold are dropped, so a feature
        has between 0 and k rows, ranks 0..n-1.
        """
        v = self.values_FK.cpu().numpy()
        keep = np.isfinite(v) & (v > min_value)  # sorted rows: a prefix per row
        feat, rank = np.nonzero(keep)
        return pl.DataFrame(
            {
                "feature": feat.astype(np.int64),
                "rank": rank.astype(np.int64),
                "doc": self.doc_FK.cpu().numpy()[keep],
                "pos": self.pos_FK.cpu().numpy()[keep],
                "value": v[keep].astype(np.float32),
            }
        )


class FeatureStats:
    """Streaming max, mean and fraction of tokens > 0 per feature."""

    def __init__(self, n_features: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.sum_F = torch.zeros(n_features, dtype=torch.float64, device=self.device)
        self.n_pos_F = torch.zeros(n_features, dtype=torch.int64, device=self.device)
        self.max_F = torch.full((n_features,), -torch.inf, device=self.device)
        self.n_tokens = torch.zeros((), dtype=torch.int64, device=self.device)

    def update(self, values_TF: torch.Tensor) -> None:
        if values_TF.shape[0] == 0:
            return
        v = values_TF.to(self.device, torch.float32)
        self.sum_F += v.sum(0, dtype=torch.float64)
        self.n_pos_F += (v > 0).sum(0)
        self.max_F = torch.maximum(self.max_F, v.amax(0))
        self.n_tokens += v.shape[0]

    def merge(self, other: FeatureStats) -> None:
        self.sum_F += other.sum_F.to(self.device)
        self.n_pos_F += other.n_pos_F.to(self.device)
        self.max_F = torch.maximum(self.max_F, other.max_F.to(self.device))
        self.n_tokens += other.n_tokens.to(self.device)

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {
            prefix + "sum": self.sum_F.cpu(),
            prefix + "n_pos": self.n_pos_F.cpu(),
            prefix + "max": self.max_F.cpu(),
            prefix + "n_tokens": self.n_tokens.cpu().reshape(1),
        }

    @classmethod
    def from_state_dict(
        cls, state: dict, prefix: str = "", device: torch.device | str = "cpu"
    ) -> FeatureStats:
        stats = cls(state[prefix + "sum"].shape[0], device)
        stats.sum_F = state[prefix + "sum"].to(stats.device, torch.float64)
        stats.n_pos_F = state[prefix + "n_pos"].to(stats.device, torch.int64)
        stats.max_F = state[prefix + "max"].to(stats.device, torch.float32)
        stats.n_tokens = state[prefix + "n_tokens"].to(stats.device).reshape(())
        return stats

    def to_frame(self) -> pl.DataFrame:
        """feature, max, mean, frac_active (f32); raises if any value was NaN."""
        n = max(int(self.n_tokens), 1)
        mean = (self.sum_F / n).cpu().numpy()
        bad = np.flatnonzero(~np.isfinite(mean))
        if bad.size:
            raise ValueError(f"features {bad[:8].tolist()} saw NaN/inf activations")
        return pl.DataFrame(
            {
                "feature": np.arange(mean.shape[0], dtype=np.int64),
                "max": self.max_F.cpu().numpy().astype(np.float32),
                "mean": mean.astype(np.float32),
                "frac_active": (self.n_pos_F.cpu().numpy() / n).astype(np.float32),
            }
        )
