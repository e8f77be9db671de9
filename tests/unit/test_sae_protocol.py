"""The SAE protocol: a document-level held-out split of the activation
shards, held-out metrics in metrics.json, seed stability (matched decoder
cosine) and the architecture comparison scored by the toy ground truth."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from shardfiles import write_doc_shards

from lorascope.groundtruth.sae_compare import (
    compare_architectures,
    matched_decoder_cosine,
    role_inputs,
)
from lorascope.sae.config import SaeConfig
from lorascope.sae.split import DocSplit, split_views
from lorascope.sae.training import train_on_shards
from lorascope.toy.roles import ROLES

D, DOC_LEN = 8, 20


def write_shards(root, x_ND, n_shards=3):
    return write_doc_shards(root, x_ND, n_shards, DOC_LEN)


def data(n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(12, D, generator=g), dim=1)
    idx = torch.rand(n, 12, generator=g).argsort(1)[:, :2]
    x = torch.zeros(n, D)
    for j in range(2):
        x += atoms[idx[:, j]] * (0.5 + torch.rand(n, 1, generator=g))
    return x


def cfg(**kw):
    base = dict(
        k=2, expansion=2, lr=3e-3, batch_size=128, epochs=2, seed=0,
        dead_feature_window=50, shuffle_buffer_tokens=0, device="cpu", log_every=50,
    )  # fmt: skip
    return SaeConfig.from_config({"sae": base | kw})


def test_split_is_by_document_and_covers_every_row(tmp_path):
    x = torch.arange(400 * D, dtype=torch.float32).reshape(400, D)  # row id in col 0
    shards = write_shards(tmp_path, x)
    train, held = split_views(shards, 5)
    assert train.n_tokens + held.n_tokens == 400
    held_rows = torch.cat(list(held.iter_batches(64))[:])[:, 0] / D
    docs = (held_rows // DOC_LEN).long().unique()
    assert docs.tolist() == [0, 5, 10, 15]  # doc % 5 == 0, whole documents
    assert held.n_tokens == 4 * DOC_LEN
    rows = torch.cat(list(train.iter_batches(64, shuffle=True, seed=1)))[:, 0] / D
    assert sorted(rows.long().tolist() + held_rows.long().tolist()) == list(range(400))
    none_train, none_held = split_views(shards, 0)
    assert none_held is None and none_train is shards
    with pytest.raises(ValueError, match="heldout_every must be >= 0"):
        DocSplit(shards, -1, heldout=False)


def test_metrics_report_the_held_out_documents(tmp_path):
    torch.set_num_threads(1)
    shards = write_shards(tmp_path / "acts", data())
    m = train_on_shards(shards, cfg(heldout_every=4), tmp_path / "model")
    json.dumps(m)
    assert m["n_tokens"] == 2000 - 25 * DOC_LEN  # training documents only
    assert m["heldout"]["n_tokens"] == 25 * DOC_LEN
    assert m["heldout"]["documents"] == "doc % 4 == 0"
    assert 0 <= m["heldout"]["fvu"] < 1 and m["heldout"]["mean_l0"] > 0
    assert "heldout" not in train_on_shards(shards, cfg(), tmp_path / "m0")
    with pytest.raises(ValueError, match="heldout_every=1: every document"):
        train_on_shards(shards, cfg(heldout_every=1), tmp_path / "m1")
    assert not (tmp_path / "m1").exists()  # nothing written


def test_matched_decoder_cosine():
    a = torch.randn(6, D)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    b = -2.0 * a[perm]  # same directions, other order, sign and scale
    all_, alive = matched_decoder_cosine(a, b, [0, 1], [1, 3])
    assert all_ == pytest.approx(1.0) and alive == pytest.approx(1.0)
    other = matched_decoder_cosine(a, torch.randn(6, D))[0]
    assert other < 0.99


def test_architectures_table_scores_every_architecture(tmp_path):
    torch.set_num_threads(1)
    x = data(1200)
    shards = write_shards(tmp_path / "acts", x)
    n_docs = 1200 // DOC_LEN
    # roles that follow the data: "column" where the first coordinate is large
    docs = np.repeat(np.arange(n_docs), DOC_LEN)
    tokens = pl.DataFrame(
        {
            "source": ["sft"] * 1200,
            "doc": [str(d) for d in docs],
            "pos": np.tile(np.arange(DOC_LEN), n_docs).astype(np.int32),
            "scored": [True] * 1200,
        }
        | {
            r: (x[:, 0] > 0.3).numpy() if r == "column" else np.zeros(1200, bool)
            for r in ROLES
        }  # fmt: skip
    )
    acts, roles = role_inputs(shards, tokens)
    torch.testing.assert_close(acts, x)
    assert roles[:, ROLES.index("column")].sum() > 0
    table = compare_architectures(
        cfg(heldout_every=4, epochs=1), ["batchtopk", "topk"], shards, tokens
    )
    assert table["architecture"].to_list() == ["batchtopk"] * 2 + ["topk"] * 2
    assert table["seed"].to_list() == [0, 1, 0, 1]
    for col in ("heldout_fvu", "gt_matched_f1", "decoder_cos_matched"):
        assert table[col].is_finite().all(), col
    assert (table["gt_matched_auroc"] > 0.5).all()
