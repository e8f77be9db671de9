"""Streaming several members' activation shards side by side, and the
running sums behind activation correlations (rule `sweep_persistence`).

Every member of a sweep was extracted on the same SFT tokens in the same
order (the same data, the same shard plan); `aligned_batches` holds one
shard per member at a time, cuts every member's stream into the same
batches of rows and checks, batch by batch, that the rows are the same
tokens (doc, position, token id), failing at the first that is not. The
correlation sums are float64 and shifted by the first batch's mean (the
one-pass covariance is then free of the cancellation a raw sum of squares
suffers when a unit's mean is large against its spread), so memory is the
sums' size, whatever the number of tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from lorascope.core.shards import ShardSet
from lorascope.sweeps.members import SweepError

__all__ = ["CrossMoments", "GroupMoments", "aligned_batches", "row_batches"]

TOKEN_COLUMNS = ("doc", "pos", "token_id")


def row_batches(shards: ShardSet, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of exactly `batch_size` rows (the last may be shorter) across
    shard boundaries, in shard order, with their token columns."""
    carry: dict | None = None
    for data in shards.iter_shards():
        if carry is not None:
            data = {k: torch.cat([carry[k], data[k]]) for k in data}
        n = data["acts"].shape[0]
        n_full = n // batch_size * batch_size
        for start in range(0, n_full, batch_size):
            yield {k: v[start : start + batch_size] for k, v in data.items()}
        carry = {k: v[n_full:] for k, v in data.items()} if n_full < n else None
    if carry is not None:
        yield carry


def aligned_batches(
    sets: Mapping[str, ShardSet], reference: str, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """`{tag: acts [B, C_tag]}` per batch of the same B tokens for every
    member; fails naming the member and the first token that differs."""
    counts = {tag: s.n_tokens for tag, s in sets.items()}
    if len(set(counts.values())) > 1:
        raise SweepError(
            "sweep members were extracted on different tokens: token counts "
            + ", ".join(
                f"{t}: {n} ({sets[t].root / 'manifest.json'})"
                for t, n in counts.items()
            )
            + "; every member must be extracted on the same SFT tokens"
        )
    tags = list(sets)
    gens = [row_batches(sets[t], batch_size) for t in tags]
    row = 0
    for parts in zip(*gens, strict=True):
        ref = parts[tags.index(reference)]
        for tag, part in zip(tags, parts, strict=True):
            for col in TOKEN_COLUMNS:
                if not torch.equal(part[col], ref[col]):
                    i = int((part[col] != ref[col]).nonzero()[0])
                    raise SweepError(
                        f"sweep member {tag!r} ({sets[tag].root / 'manifest.json'}) "
                        f"is not on the reference's tokens: row {row + i} is "
                        f"{_token(part, i)}, the reference {reference!r} has "
                        f"{_token(ref, i)}; "
                        "every member must be extracted on the same SFT tokens "
                        "in the same order"
                    )
        yield {tag: part["acts"] for tag, part in zip(tags, parts, strict=True)}
        row += ref["acts"].shape[0]


def _token(part: dict, i: int) -> str:
    return ", ".join(f"{c} {int(part[c][i])}" for c in TOKEN_COLUMNS)


class CrossMoments:
    """Running float64 sums for the correlation of P units with Q units, on
    `device` (the (P, Q) product is the pass's cost: a GPU takes it when the
    SAEs are wide)."""

    def __init__(self, p: int, q: int, device: str | torch.device = "cpu"):
        self.n = 0
        self.device = torch.device(device)
        self.shift_x = self.shift_y = None
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.sx, self.sxx, self.sy, self.syy = zeros(p), zeros(p), zeros(q), zeros(q)
        self.sxy = zeros(p, q)

    def update(self, x_BP: torch.Tensor, y_BQ: torch.Tensor) -> None:
        x = x_BP.to(self.device, torch.float64)
        y = y_BQ.to(self.device, torch.float64)
        if self.shift_x is None:
            self.shift_x, self.shift_y = x.mean(0), y.mean(0)
        x, y = x - self.shift_x, y - self.shift_y
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sxx += (x * x).sum(0)
        self.sy += y.sum(0)
        self.syy += (y * y).sum(0)
        self.sxy += x.T @ y  # (P, Q)

    def std(self) -> tuple[np.ndarray, np.ndarray]:
        """Standard deviations of the x and the y units (0 for a constant)."""
        return _std(self.sx, self.sxx, self.n), _std(self.sy, self.syy, self.n)

    def corr(self) -> np.ndarray:
        """Pearson correlations (P, Q); 0 where a unit is constant (its
        correlation is undefined: it cannot match anything)."""
        if self.n == 0:
            raise SweepError("no tokens: the activation shards are empty")
        mx, my = self.sx / self.n, self.sy / self.n
        cov = (self.sxy / self.n - torch.outer(mx, my)).cpu().numpy()
        sd_x, sd_y = self.std()
        den = np.outer(sd_x, sd_y)
        out = np.zeros_like(den)
        np.divide(cov, den, out=out, where=den > 0)
        return np.clip(out, -1.0, 1.0)


def _std(s: torch.Tensor, ss: torch.Tensor, n: int) -> np.ndarray:
    var = (ss / n - (s / n) ** 2).clamp_min(0).cpu().numpy()
    return np.sqrt(var)


class GroupMoments:
    """Running float64 sums for the correlations within groups of units
    (the r scalars of one LoRA module): one (r, r) block per group."""

    def __init__(self, groups: Sequence[np.ndarray]):
        self.groups = [torch.as_tensor(g, dtype=torch.int64) for g in groups]
        self.n = 0
        self.shift = None
        self.s: torch.Tensor | None = None
        sizes = {len(g) for g in groups}
        flat = torch.cat(self.groups) if groups else torch.zeros(0, dtype=torch.int64)
        # the component table keeps a module's slots together and every module
        # has the same rank: then the blocks are one batched product
        self.r = sizes.pop() if len(sizes) == 1 else None
        self.contiguous = self.r is not None and torch.equal(
            flat, torch.arange(len(flat))
        )
        self.blocks = torch.zeros(
            len(groups),
            *(2 * [max((len(g) for g in groups), default=0)]),
            dtype=torch.float64,
        )

    def update(self, y_BQ: torch.Tensor) -> None:
        y = y_BQ.to(torch.float64)
        if self.shift is None:
            self.shift = y.mean(0)
            self.s = torch.zeros(y.shape[1], dtype=torch.float64)
        y = y - self.shift
        self.n += y.shape[0]
        self.s += y.sum(0)
        if self.contiguous:
            y_BGR = y.reshape(y.shape[0], len(self.groups), self.r)
            self.blocks += torch.einsum("bgi,bgj->gij", y_BGR, y_BGR)
            return
        for i, g in enumerate(self.groups):
            yg = y[:, g]
            self.blocks[i, : len(g), : len(g)] += yg.T @ yg

    def corr(self, i: int) -> np.ndarray:
        """The correlation matrix of group i's units (identity where constant)."""
        g = self.groups[i]
        m = (self.s[g] / self.n).numpy()
        cov = self.blocks[i, : len(g), : len(g)].numpy() / self.n - np.outer(m, m)
        sd = np.sqrt(np.clip(np.diag(cov), 0, None))
        den = np.outer(sd, sd)
        out = np.eye(len(g))
        np.divide(cov, den, out=out, where=den > 0)
        return out
