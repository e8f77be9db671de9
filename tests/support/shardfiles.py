"""Activation shards of whole documents written for tests, as the extractor
writes them (lorascope.activations.shard_writer), and opened."""

from __future__ import annotations

import torch

from lorascope.activations.shard_writer import write_manifest, write_shard
from lorascope.core.shards import open_shards


def write_doc_shards(root, x_ND, n_shards: int, doc_len: int):
    """Rows of `x_ND` as documents of `doc_len` tokens, split over `n_shards`
    shards of whole documents; returns the opened ShardSet."""
    doc_N = torch.arange(len(x_ND)) // doc_len
    pos_N = (torch.arange(len(x_ND)) % doc_len).int()
    recs = []
    for i, docs in enumerate(doc_N.unique().chunk(n_shards)):
        rows = torch.isin(doc_N, docs).nonzero().flatten()
        recs.append(
            write_shard(
                root / "shards",
                i,
                x_ND[rows],
                doc_N[rows],
                pos_N[rows],
                torch.zeros(len(rows), dtype=torch.int32),
                rows=(int(docs[0]), int(docs[-1]) + 1),
                fingerprint="test",
            )  # fmt: skip
        )
    write_manifest(root, recs, [f"c{i}" for i in range(x_ND.shape[1])], {})
    return open_shards(root)
