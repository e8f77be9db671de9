"""A document-level split of the activation shards: training vs held out.

Used by `lorascope.sae.training.train_on_shards` (rule `train_sae`) and the
SAE comparison of the ground-truth stage. Documents with
`doc % every == 0` are held out (a split by document, never by token, so
held-out tokens come from sequences the SAE never saw); `every = 0` keeps
every document on the training side. A view has the `ShardSet` calls the
SAE code uses: `n_tokens`, `n_components`, `iter_batches`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["DocSplit", "split_views"]


class DocSplit:
    """One side (`heldout` True or False) of the split of a ShardSet."""

    def __init__(self, shards, every: int, heldout: bool):
        if every < 0:
            raise ValueError(f"sae.heldout_every must be >= 0, got {every}")
        self.shards, self.every, self.heldout = shards, every, heldout
        self.n_components = shards.n_components
        self._n_tokens: int | None = None

    def _keep(self, doc_T: torch.Tensor) -> torch.Tensor:
        out = (
            (doc_T % self.every == 0)
            if self.every
            else torch.zeros_like(doc_T, dtype=torch.bool)
        )
        return out if self.heldout else ~out

    @property
    def n_tokens(self) -> int:
        if self._n_tokens is None:  # one pass over the doc columns
            self._n_tokens = sum(
                int(self._keep(s["doc"]).sum()) for s in self.shards.iter_shards()
            )
        return self._n_tokens

    def iter_batches(self, batch_size: int, **kwargs) -> Iterator[torch.Tensor]:
        """As `ShardSet.iter_batches`, over this side's rows only."""
        return self.shards.iter_batches(
            batch_size, rows=lambda data: self._keep(data["doc"]), **kwargs
        )


def split_views(shards, every: int):
    """(training side, held-out side), or (the shard set itself, None) when
    nothing is held out."""
    if every == 0:
        return shards, None
    return DocSplit(shards, every, heldout=False), DocSplit(shards, every, heldout=True)
