"""sweeps.recovery: Table 1 per sweep member and per rank, against a hand
computation: point values from the correct counts, intervals from the same
paired bootstrap as Table 1 (`evaluation.tables`), the per-rank pool as the
mean over seeds, trainable parameters from the adapter headers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from sweepfiles import D_IN, D_OUT, MODULES, adapter_factors, member, write_adapter

from lorascope.evaluation.tables import table1
from lorascope.sweeps.job import recovery_table
from lorascope.sweeps.members import SweepError

N = 20
# correct answers per problem (1 = correct) for each variant, by hand
CORRECT = {
    "base": [1] * 4 + [0] * 16,  # 0.20
    "full": [1] * 14 + [0] * 6,  # 0.70
    "r1-s1": [1] * 9 + [0] * 11,  # 0.45 -> recovery 0.5
    "r1-s2": [1] * 11 + [0] * 9,  # 0.55 -> 0.7
    "r4-s1": [1] * 13 + [0] * 7,  # 0.65 -> 0.9
    "r1-s1-step5": [1] * 2 + [0] * 18,  # 0.10 -> -0.2
}
N_BOOT, SEED = 400, 3


def _eval(path, correct):
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [f"p{i:02d}" for i in range(N)]
    # rows shuffled: problems are aligned by id, not by position
    order = np.random.default_rng(len(path.parts)).permutation(N)
    pl.DataFrame(
        {"id": [ids[i] for i in order], "correct": [bool(correct[i]) for i in order]}
    ).write_parquet(path)


@pytest.fixture
def sweep(tmp_path):
    gen = torch.Generator().manual_seed(0)
    shared = tmp_path / "results/x"
    for v in ("base", "full"):
        _eval(shared / f"eval/{v}/math.parquet", CORRECT[v])
    members = []
    for tag, rank, seed, step in (
        ("r1-s1", 1, 1, None),
        ("r1-s2", 1, 2, None),
        ("r4-s1", 4, 1, None),
        ("r1-s1-step5", 1, 1, 5),
    ):
        root = shared if tag == "r1-s1" else shared / f"sweep/{tag}"
        write_adapter(root, adapter_factors(rank, gen))
        _eval(root / "eval/rank1/math.parquet", CORRECT[tag])
        members.append(member(tag, rank, seed, root, step))
    return shared, members


def _run(sweep, tmp_path, **kw):
    shared, members = sweep
    return recovery_table(
        members,
        "r1-s1",
        shared,
        ["math"],
        tmp_path / "r.parquet",
        tmp_path / "r.md",
        n_boot=N_BOOT,
        ci=0.9,
        seed=SEED,
        **kw,
    )


def test_recovery_per_member_and_rank_by_hand(sweep, tmp_path):
    table = _run(sweep, tmp_path)
    m = {
        r["tag"]: r
        for r in table.filter(pl.col("level") == "member").iter_rows(named=True)
    }  # noqa: E501
    for tag, want in (
        ("r1-s1", 0.5),
        ("r1-s2", 0.7),
        ("r4-s1", 0.9),
        ("r1-s1-step5", -0.2),
    ):  # noqa: E501
        assert m[tag]["recovery"] == pytest.approx(want)
        assert m[tag]["accuracy"] == pytest.approx(np.mean(CORRECT[tag]))
        assert m[tag]["recovery_lo"] <= m[tag]["recovery"] <= m[tag]["recovery_hi"]
    assert m["r1-s1"]["reference"] and not m["r1-s2"]["reference"]
    assert m["r1-s1-step5"]["step"] == 5
    # rank-r adapter: r * (d_in + d_out) per module
    assert m["r1-s1"]["trainable_params"] == len(MODULES) * (D_IN + D_OUT)
    assert m["r4-s1"]["trainable_params"] == 4 * len(MODULES) * (D_IN + D_OUT)
    r = {
        r["rank"]: r
        for r in table.filter(pl.col("level") == "rank").iter_rows(named=True)
    }  # noqa: E501
    assert sorted(r) == [1, 4]  # the checkpoint is not pooled
    assert r[1]["n_seeds"] == 2 and r[1]["accuracy"] == pytest.approx(0.5)
    assert r[1]["recovery"] == pytest.approx(0.6)  # (0.5 - 0.2) / (0.7 - 0.2)
    assert (r[1]["seed_min"], r[1]["seed_max"]) == pytest.approx((0.5, 0.7))
    assert r[4]["recovery"] == pytest.approx(0.9) and r[4]["n_seeds"] == 1


def test_intervals_are_table1s_paired_bootstrap(sweep, tmp_path):
    """A member's interval is Table 1's for that member alone (the same
    resampled problems), and the rank pool's is the bootstrap of the
    seeds' mean correctness over those same resamples."""
    table = _run(sweep, tmp_path)
    c = {k: np.array(v, bool) for k, v in CORRECT.items()}
    for tag in ("r1-s2", "r4-s1"):
        t1 = table1(
            {"math": {"base": c["base"], "rank1": c[tag], "full": c["full"]}},
            n_boot=N_BOOT,
            ci=0.9,
            seed=SEED,
        ).row(0, named=True)
        row = table.filter(pl.col("tag") == tag).row(0, named=True)
        for a, b in (
            ("recovery_lo", "recovery_lo"),
            ("recovery_hi", "recovery_hi"),
            ("accuracy_lo", "rank1_lo"),
            ("base_hi", "base_hi"),
        ):
            assert row[a] == pytest.approx(t1[b])
    idx = np.random.default_rng(SEED).integers(0, N, size=(N_BOOT, N))
    mean_seeds = (c["r1-s1"].astype(float) + c["r1-s2"]) / 2
    boot = lambda v: v[idx].mean(axis=1)  # noqa: E731
    rec = (boot(mean_seeds) - boot(c["base"])) / (boot(c["full"]) - boot(c["base"]))
    ok = boot(c["full"]) > boot(c["base"])
    lo, hi = np.percentile(rec[ok], [5, 95])
    pooled = table.filter(pl.col("tag") == "rank-1").row(0, named=True)
    assert (pooled["recovery_lo"], pooled["recovery_hi"]) == pytest.approx((lo, hi))


def test_markdown_says_how_it_pools(sweep, tmp_path):
    _run(sweep, tmp_path)
    md = (tmp_path / "r.md").read_text()
    assert "60.0% [" in md and "50.0 to 70.0%" in md
    assert "seeds fixed" in md and "400 resamples" in md


def test_missing_eval_names_the_file_and_member(sweep, tmp_path):
    shared, members = sweep
    (shared / "sweep/r4-s1/eval/rank1/math.parquet").unlink()
    (shared / "eval/full/math.parquet").unlink()
    with pytest.raises(SweepError) as err:
        _run(sweep, tmp_path)
    assert "sweep/r4-s1/eval/rank1/math.parquet (member r4-s1)" in str(err.value)
    assert "eval/full/math.parquet" in str(err.value)
    assert not (tmp_path / "r.parquet").exists()


def test_different_problems_fail(sweep, tmp_path):
    shared, _ = sweep
    path = shared / "sweep/r1-s2/eval/rank1/math.parquet"
    pl.read_parquet(path).head(N - 1).write_parquet(path)
    with pytest.raises(ValueError, match="graded different problems"):
        _run(sweep, tmp_path)


def test_bad_member_lists_fail(sweep, tmp_path):
    shared, members = sweep
    kw = dict(n_boot=10)
    with pytest.raises(SweepError, match="no members"):
        recovery_table(
            [], "r1-s1", shared, ["math"], tmp_path / "a", tmp_path / "b", **kw
        )  # noqa: E501
    with pytest.raises(SweepError, match=r"duplicate tag\(s\) \['r1-s1'\]"):
        recovery_table(
            members + members[:1],
            "r1-s1",
            shared,
            ["math"],
            tmp_path / "a",
            tmp_path / "b",
            **kw,
        )
    with pytest.raises(SweepError, match="no benchmarks"):
        recovery_table(
            members, "r1-s1", shared, [], tmp_path / "a", tmp_path / "b", **kw
        )
    bad = [dict(members[0], rank=0)]
    with pytest.raises(SweepError, match="rank = 0 is below 1"):
        recovery_table(
            bad, "r1-s1", shared, ["math"], tmp_path / "a", tmp_path / "b", **kw
        )  # noqa: E501


def test_command_line_runs_the_same_function(sweep, tmp_path):
    """`python -m lorascope.sweeps.job recovery --spec spec.json` (a rule's
    thin call) writes what the function writes."""
    import json

    from lorascope.sweeps.job import main

    shared, members = sweep
    spec = dict(
        members=members,
        reference="r1-s1",
        shared_root=str(shared),
        benchmarks=["math"],
        out_parquet=str(tmp_path / "cli.parquet"),
        out_md=str(tmp_path / "cli.md"),
        n_boot=N_BOOT,
        ci=0.9,
        seed=SEED,
    )
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    main(["recovery", "--spec", str(tmp_path / "spec.json")])
    assert pl.read_parquet(tmp_path / "cli.parquet").equals(_run(sweep, tmp_path))
