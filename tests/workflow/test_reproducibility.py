"""Same seed, same machine, same bytes: two micro runs on one CPU give
bitwise-identical adapters and activation shards; another seed gives a
different adapter. Through the real workflow (snakemake in temp dirs)."""

import pytest
import wfrun

pytestmark = pytest.mark.timeout(1800)

ADAPTER = "train/rank1/adapter/adapter_model.safetensors"
MANIFEST = "activations/manifest.json"


def artifacts(work):
    """Relative path -> bytes of the adapter weights and every shard."""
    out = wfrun.results(work)
    files = [
        out / ADAPTER,
        *sorted((out / "activations" / "shards").glob("*.safetensors")),
    ]
    return {f.relative_to(out).as_posix(): f.read_bytes() for f in files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shared seed-0 micro run, a second seed-0 run, and a seed-1 run."""
    base = tmp_path_factory.getbasetemp()
    targets = [wfrun.target(MANIFEST)]
    again = wfrun.workdir(base / "repro-seed0-again", {"seed": 0})
    wfrun.snakemake(again, targets)
    first = wfrun.reference_run(base)
    # Another seed changes the adapter from the first step on: training is
    # enough to show it (shards of another adapter differ a fortiori). Its
    # toy world and data start as copies of the first run's (what the seed
    # changes there reruns).
    other = wfrun.clone(first, base / "repro-seed1", ["toy", "data"], {"seed": 1})
    wfrun.snakemake(other, [wfrun.target("train/rank1/adapter")])
    return first, again, other


def test_same_seed_same_machine_bitwise_identical(runs):
    """Bitwise is the claim on one machine and software stack; across CPUs
    float32 kernels sum in other orders and the bytes differ (README)."""
    first, again, _ = runs
    a, b = artifacts(first), artifacts(again)
    assert any("shards" in k for k in a), f"no activation shards in {sorted(a)}"
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"same seed, different bytes: {differ}"


def test_different_seed_differs(runs):
    first, _, other = runs
    a, c = artifacts(first), artifacts(other)
    assert a[ADAPTER] != c[ADAPTER], "seed 1 trained the same adapter as seed 0"
