"""Shard format: plan, atomic write, verification, reading and resume."""

from __future__ import annotations

import pytest
import torch

from lorascope.activations.shard_writer import (
    clear_shard,
    shard_plan,
    valid_record,
    write_manifest,
    write_shard,
)
from lorascope.core.shards import ShardError, open_shards, shard_path

FP = "fp-test"


def _fake_docs(n_docs=7, n_comp=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n_docs,), generator=g).tolist()
    docs = []
    for d, n in enumerate(lengths):
        docs.append(
            dict(
                doc=torch.full((n,), 100 + d),
                pos=torch.arange(n),
                token_id=torch.randint(0, 50, (n,), generator=g),
                acts=torch.randn(n, n_comp, generator=g),
            )
        )
    return lengths, docs


def _write_all(root, docs, plan, dtype=torch.float32):
    recs = []
    for i, (a, b) in enumerate(plan):
        cat = {k: torch.cat([d[k] for d in docs[a:b]]) for k in docs[0]}
        recs.append(
            write_shard(
                root / "shards",
                i,
                cat["acts"].to(dtype),
                cat["doc"],
                cat["pos"],
                cat["token_id"],
                rows=(a, b),
                fingerprint=FP,
                extras={"topk": {"x": torch.arange(3)}},
            )
        )
    return write_manifest(root, recs, [f"c{i}" for i in range(5)], {"m": 1})


def test_plan_covers_every_row_once():
    lengths = [3, 10, 1, 1, 1, 4, 2]
    plan = shard_plan(lengths, 4)
    assert plan == [(0, 2), (2, 6), (6, 7)]
    rows = [r for a, b in plan for r in range(a, b)]
    assert rows == list(range(len(lengths)))
    assert shard_plan([], 4) == []
    with pytest.raises(ValueError, match="shard_tokens"):
        shard_plan(lengths, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_roundtrip_and_reader_api(tmp_path, dtype):
    lengths, docs = _fake_docs()
    plan = shard_plan(lengths, 10)
    man = _write_all(tmp_path, docs, plan, dtype)
    assert man["n_tokens"] == sum(lengths)
    ss = open_shards(tmp_path)
    assert ss.n_tokens == sum(lengths) and ss.n_components == 5
    assert ss.dtype == dtype and len(ss.shards) == len(plan)
    everything = ss.load_all()
    want = torch.cat([d["acts"] for d in docs]).to(dtype)
    assert torch.equal(everything["acts"], want)  # storage is exact
    assert everything["doc"].tolist() == torch.cat([d["doc"] for d in docs]).tolist()
    # batches stream every row exactly once, shuffled or not
    for shuffle in (False, True):
        batches = list(ss.iter_batches(4, shuffle=shuffle, seed=3))
        assert all(b.shape == (4, 5) for b in batches[:-1])
        got = torch.cat(batches)
        assert got.dtype == torch.float32 and got.shape == want.shape
        key = lambda t: sorted(map(tuple, t.float().tolist()))  # noqa: E731
        assert key(got) == key(want)
    a = torch.cat(list(ss.iter_batches(4, shuffle=True, seed=3)))
    b = torch.cat(list(ss.iter_batches(4, shuffle=True, seed=3)))
    assert torch.equal(a, b)
    assert sum(x.shape[0] for x in ss.iter_batches(4, drop_last=True)) == (
        sum(lengths) // 4 * 4
    )
    # per-doc access returns that doc's tokens in order
    got = dict(ss.iter_docs([103, 100]))
    assert torch.equal(got[103]["acts"], docs[3]["acts"].to(dtype))
    assert got[100]["pos"].tolist() == list(range(lengths[0]))
    with pytest.raises(ShardError, match="999"):
        list(ss.iter_docs([999]))
    assert ss.read_extra(ss.shards[0], "topk")["x"].tolist() == [0, 1, 2]


def test_corrupt_shard_is_named(tmp_path):
    lengths, docs = _fake_docs()
    _write_all(tmp_path, docs, shard_plan(lengths, 10))
    bad = tmp_path / "shards" / "shard-00001.safetensors"
    raw = bytearray(bad.read_bytes())
    raw[-3] ^= 0xFF
    bad.write_bytes(bytes(raw))
    with pytest.raises(ShardError, match="shard-00001.safetensors.*sha256"):
        open_shards(tmp_path)
    bad.unlink()
    with pytest.raises(ShardError, match="shard-00001.safetensors: missing"):
        open_shards(tmp_path)
    extra = tmp_path / "shards" / "shard-00000.topk.safetensors"
    extra.write_bytes(b"junk")
    with pytest.raises(ShardError, match="shard-00000"):
        open_shards(tmp_path)
    with pytest.raises(ShardError, match="no shard manifest"):
        open_shards(tmp_path / "nowhere")


def test_valid_record_rejects_stale_or_broken(tmp_path):
    lengths, docs = _fake_docs()
    plan = shard_plan(lengths, 10)
    _write_all(tmp_path, docs, plan)
    sd = tmp_path / "shards"
    assert valid_record(sd, 0, FP, plan[0])["rows"] == list(plan[0])
    assert valid_record(sd, 0, "other-setup", plan[0]) is None
    assert valid_record(sd, 0, FP, (0, 99)) is None
    shard_path(sd, 1, "topk.safetensors").write_bytes(b"x")
    assert valid_record(sd, 1, FP, plan[1]) is None
    clear_shard(sd, 1)
    assert not list(sd.glob("shard-00001.*"))
    assert valid_record(sd, 1, FP, plan[1]) is None
    assert valid_record(sd, 0, FP, plan[0]) is not None
