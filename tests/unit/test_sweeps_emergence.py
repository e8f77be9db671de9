"""sweeps.tables.emergence: over the reference's checkpoints, the share of
its features matched per step (overall and by category) and each feature's
first matched step, on persistence rows whose answer is known."""

from __future__ import annotations

import polars as pl
import pytest
from sweepfiles import member

from lorascope.sweeps.job import emergence_table
from lorascope.sweeps.members import SweepError

# feature -> matched at steps 10, 20, 30 (checkpoints of rank 1, seed 1)
MATCHED = {
    0: (False, True, True),  # appears at 20
    1: (True, True, True),  # at 10
    2: (False, False, False),  # never before the end
    3: (True, False, True),  # at 10, lost at 20: does not stay
}
CATEGORY = {0: "math", 1: "math", 2: "discourse", 3: None}


def _rows() -> pl.DataFrame:
    rows = []
    for step_i, step in enumerate((10, 20, 30)):
        for f, m in MATCHED.items():
            rows.append(
                dict(
                    member=f"r1-s1-step{step}",
                    rank=1,
                    seed=1,
                    step=step,
                    kind="lora",
                    feature=f,
                    label=f"L{f}",
                    category=CATEGORY[f],
                    classification=f % 3,
                    matched=m[step_i],
                    threshold=0.7,
                )
            )
    # another seed's rows: not a checkpoint of the reference, left out
    rows += [dict(rows[0], member="r1-s2", seed=2, step=None, matched=True)]
    return pl.DataFrame(rows)


MEMBERS = [
    member("r1-s1", 1, 1, "results/x"),
    *(
        member(f"r1-s1-step{s}", 1, 1, f"results/x/sweep/r1-s1-step{s}", s)
        for s in (10, 20, 30)
    ),  # noqa: E501
    member("r1-s2", 1, 2, "results/x/sweep/r1-s2"),
]


def test_curve_and_first_steps(tmp_path):
    _rows().write_parquet(tmp_path / "p.parquet")
    curve, first = emergence_table(
        MEMBERS,
        "r1-s1",
        tmp_path / "p.parquet",
        tmp_path / "c.parquet",
        tmp_path / "f.parquet",
    )
    overall = curve.filter(pl.col("by") == "all").sort("step")
    assert overall["step"].to_list() == [10, 20, 30]
    assert overall["share"].to_list() == [0.5, 0.5, 0.75]
    assert overall["n"].to_list() == [4, 4, 4]
    math = curve.filter(pl.col("group") == "math").sort("step")
    assert math["share"].to_list() == [0.5, 1.0, 1.0]
    assert set(curve["group"]) == {"all", "math", "discourse", "(unlabelled)"}
    got = {
        r["feature"]: (r["first_step"], r["stays"]) for r in first.iter_rows(named=True)
    }  # noqa: E501
    assert got == {0: (20, True), 1: (10, True), 2: (None, False), 3: (10, False)}
    assert curve["threshold"].unique().to_list() == [0.7]
    assert pl.read_parquet(tmp_path / "c.parquet").equals(curve)


def test_no_checkpoint_members_fail(tmp_path):
    _rows().write_parquet(tmp_path / "p.parquet")
    ends = [MEMBERS[0], MEMBERS[-1]]
    with pytest.raises(
        SweepError, match="no checkpoint member of the reference's rank 1 and seed 1"
    ):  # noqa: E501
        emergence_table(
            ends, "r1-s1", tmp_path / "p.parquet", tmp_path / "c", tmp_path / "f"
        )  # noqa: E501
    with pytest.raises(SweepError, match=r"p2.parquet"):
        emergence_table(
            MEMBERS, "r1-s1", tmp_path / "p2.parquet", tmp_path / "c", tmp_path / "f"
        )  # noqa: E501
    extra = [*MEMBERS, member("r1-s1-step40", 1, 1, "x", 40)]
    with pytest.raises(SweepError, match=r"no rows for \['r1-s1-step40'\]"):
        emergence_table(
            extra, "r1-s1", tmp_path / "p.parquet", tmp_path / "c", tmp_path / "f"
        )  # noqa: E501


def test_wilson_interval_stays_within_zero_and_one():
    import numpy as np

    from lorascope.sweeps.tables import wilson

    lo, hi = wilson(np.array([0, 5, 3]), np.array([5, 5, 10]))
    assert lo[0] == 0.0 and hi[1] == 1.0  # no -0.00 / 1.00000001 from rounding
    assert 0 < lo[2] < 0.3 < hi[2] < 1
    # The textbook value for 3 of 10 at z = 1.96: [0.108, 0.603].
    assert (round(lo[2], 3), round(hi[2], 3)) == (0.108, 0.603)
