"""Content fingerprints of user-supplied files (issue 33, item 3): a change of
content changes them whatever the mtime says; a touch, a copy elsewhere or a
hidden bookkeeping file does not; weight files are sampled, not read whole."""

from __future__ import annotations

import json
import os
import time

import pytest

from lorascope.workflow import fingerprints as fp


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path):
    fp.use_disk_cache(tmp_path / "cache.json")
    yield
    fp.use_disk_cache(None)


def _set_mtime(path, ns):
    os.utime(path, ns=(ns, ns))


def test_content_counts_not_mtime_or_place(tmp_path):
    f = tmp_path / "sft.jsonl"
    f.write_text('{"question": "a"}\n')
    first = fp.fingerprint(f)
    os.utime(f)  # a touch
    assert fp.fingerprint(f) == first
    moved = tmp_path / "elsewhere" / "sft.jsonl"
    moved.parent.mkdir()
    moved.write_bytes(f.read_bytes())
    assert fp.fingerprint(moved) == first
    old = f.stat().st_mtime_ns
    f.write_text('{"question": "b"}\n')  # another version, restored older
    _set_mtime(f, old - 10**12)
    assert fp.fingerprint(f) != first
    assert fp.fingerprint(tmp_path / "nothing") == "missing"


def test_a_same_size_rewrite_back_to_the_old_mtime_misses_the_cache(tmp_path):
    """size, mtime and inode equal (rewritten in place, mtime set back): the
    ctime in the cache key still tells the two versions apart, in memory and
    from the disk cache of a later parse."""
    f = tmp_path / "weights.bin"
    f.write_bytes(b"A" * 4096)
    stamp = f.stat()
    first = fp.fingerprint(f)
    time.sleep(0.05)  # past a coarse filesystem clock tick, as any real restore
    with open(f, "r+b") as out:  # same inode, same size
        out.write(b"B")
    _set_mtime(f, stamp.st_mtime_ns)
    assert (f.stat().st_ino, f.stat().st_size) == (stamp.st_ino, stamp.st_size)
    assert fp.fingerprint(f) != first
    fp.use_disk_cache(tmp_path / "cache.json")  # a later parse
    assert fp.fingerprint(f) != first


def test_the_disk_cache_serves_unchanged_files_without_reading(tmp_path, monkeypatch):
    f = tmp_path / "template.txt"
    f.write_text("Explain $examples\n")
    first = fp.fingerprints([str(f)])
    assert json.loads((tmp_path / "cache.json").read_text())  # saved
    fp.use_disk_cache(tmp_path / "cache.json")  # a later parse

    def no_reading(*a, **k):
        raise AssertionError("read a file the cache knows")

    monkeypatch.setattr(fp, "open", no_reading, raising=False)
    assert fp.fingerprints([str(f)]) == first


def _safetensors(path, shape, fill: bytes):
    # Metadata first: the tensor entries lie past the first sampled block,
    # as in a real checkpoint's header (hundreds of KB).
    header = json.dumps(
        {
            "__metadata__": {"format": "pt", "note": "x" * 1000},
            "w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 * shape[0]]},
        }
    ).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.write(fill * (4 * shape[0] // len(fill)))


def test_weight_files_are_sampled_with_their_header(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "FULL_HASH_MAX", 1 << 16)
    monkeypatch.setattr(fp, "SAMPLE_BYTES", 256)
    n = 1 << 18  # 1 MiB of weights, far over FULL_HASH_MAX
    a = tmp_path / "a.safetensors"
    _safetensors(a, [n], b"\x01\x02\x03\x04")
    reads = []
    real_open = open

    class Counting:
        def __init__(self, *args):
            self.f = real_open(*args)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, size=-1):
            data = self.f.read(size)
            reads.append(len(data))
            return data

        def seek(self, pos):
            return self.f.seek(pos)

    monkeypatch.setattr(fp, "open", Counting, raising=False)
    sampled = fp.fingerprint(a)
    assert sampled.startswith("sampled:")
    header = int.from_bytes(a.read_bytes()[:8], "little")
    assert sum(reads) <= 8 + header + fp.SAMPLES * fp.SAMPLE_BYTES < a.stat().st_size
    # a retrained checkpoint: every weight differs, same header and size
    b = tmp_path / "b.safetensors"
    _safetensors(b, [n], b"\x05\x06\x07\x08")
    assert fp.fingerprint(b) != sampled
    # same bytes after the header, another shape in it (past the first block)
    c = tmp_path / "c.safetensors"
    _safetensors(c, [n - 1], b"\x01\x02\x03\x04")
    with open(c, "ab") as f:
        f.write(b"\x01\x02\x03\x04")
    assert c.stat().st_size == a.stat().st_size
    assert fp.fingerprint(c) != sampled
    # the last block is sampled: a change at the very end is seen
    d = tmp_path / "d.safetensors"
    d.write_bytes(a.read_bytes()[:-1] + b"\xff")
    assert fp.fingerprint(d) != sampled


def test_a_directory_follows_its_files_not_its_hidden_bookkeeping(tmp_path):
    model = tmp_path / "full_ft"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "sub" / "model.safetensors").write_bytes(b"\x00" * 64)
    first = fp.fingerprint(model)
    assert first.startswith("dir:") and "(2 files)" in first
    (model / ".cache").mkdir()
    (model / ".cache" / "download.lock").write_text("x")
    (model / ".snakemake_timestamp").write_text("")
    assert fp.fingerprint(model) == first
    dir_mtime = model.stat().st_mtime_ns
    with open(model / "config.json", "w") as f:  # edited in place
        f.write('{"hidden_size": 16}')
    assert model.stat().st_mtime_ns == dir_mtime  # Snakemake's view: unchanged
    assert fp.fingerprint(model) != first
    (model / "config.json").write_text('{"hidden_size": 8}')
    assert fp.fingerprint(model) == first
    (model / "tokenizer.json").write_text("{}")
    assert fp.fingerprint(model) != first


def test_only_user_paths_are_fingerprinted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "sft.parquet").write_bytes(b"PAR1")
    (tmp_path / "inputs" / "explain.txt").write_text("$examples")
    values = [
        "results/run/data/sft.parquet",
        {"base": "inputs/explain.txt", "models": ["hub/model/Org--M@main"]},
        ["inputs/sft.parquet", []],
        [],
    ]
    got = fp.of_user_paths(values, made=("results/run/", "hub/"))
    assert list(got) == ["inputs/explain.txt", "inputs/sft.parquet"]
    assert all(v.startswith("sha256:") for v in got.values())
