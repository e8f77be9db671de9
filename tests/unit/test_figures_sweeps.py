"""The sweep figures: recovery and accuracy against rank (with a
trainable-parameter axis) and the emergence curve, drawn from tables the
sweep stage makes, saved as PNG and PDF at one column width."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.text import Text

from lorascope.figures import emergence, recovery_rank
from lorascope.figures.style import FigureData, FigureStyle, save_figure
from lorascope.sweeps.members import Member
from lorascope.sweeps.recovery import recovery_frame
from lorascope.sweeps.tables import emergence as emergence_curve

STYLE = FigureStyle(width_in=3.5, font_size=8, dpi=100)
RANKS = (1, 2, 4)


def _texts(fig) -> str:
    return " ".join(t.get_text() for t in fig.findobj(Text))


def _save(fig, tmp_path: Path, name: str):
    paths = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    save_figure(fig, paths, STYLE.dpi)
    assert paths[1].read_bytes().startswith(b"%PDF")
    assert all(p.stat().st_size > 1000 for p in paths)


def _recovery() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    members = [
        Member(f"r{r}-s{s}", r, s, None, Path("."))
        for r in RANKS for s in (1, 2)
    ]  # fmt: skip
    frames = {}
    ids = [f"p{i}" for i in range(n)]

    def frame(p):
        return pl.DataFrame({"id": ids, "correct": rng.random(n) < p})

    for bench in ("math", "gpqa"):
        frames[bench] = {"base": frame(0.2), "full": frame(0.7)} | {
            m.tag: frame(0.3 + 0.1 * np.log2(m.rank)) for m in members
        }
    params = {m.tag: 1000 * m.rank for m in members}
    return recovery_frame(members, "r1-s1", frames, params, n_boot=50, seed=0)


def test_params_axis_is_exact_for_a_size_proportional_to_rank():
    forward, inverse = recovery_rank.params_axis([1, 4, 64], [300, 1200, 19200])
    np.testing.assert_allclose(
        forward(np.array([1, 2, 64, 128])), [300, 600, 19200, 38400]
    )  # noqa: E501
    np.testing.assert_allclose(inverse(np.array([600.0])), [2.0])
    one_f, one_i = recovery_rank.params_axis([4], [1200])
    assert one_f(np.array([8.0]))[0] == pytest.approx(2400)


def test_recovery_rank_figure(tmp_path):
    table = _recovery()
    data = FigureData({"recovery": table}, {"recovery": "sweeps/recovery.parquet"})
    drawn = recovery_rank.draw(data, {}, STYLE)
    fig = drawn.fig
    main = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    assert len(main) == 4  # recovery and accuracy, two benchmarks
    text = _texts(fig)
    assert "math" in text and "gpqa" in text and "trainable parameters" in text
    assert "1k" in text and "4k" in text  # the parameter ticks
    assert "seeds pooled per rank: 2" in drawn.note
    _save(fig, tmp_path, "fig_recovery_rank")


def test_recovery_rank_without_rank_rows_fails_naming_the_file():
    table = _recovery().filter(pl.col("level") == "member")
    with pytest.raises(ValueError, match="x/recovery.parquet: no per-rank rows"):
        recovery_rank.plot_recovery_rank(table, STYLE, source="x/recovery.parquet")
    with pytest.raises(ValueError, match=r"x/recovery.parquet: missing column.*rank"):
        recovery_rank.plot_recovery_rank(
            table.drop("rank"), STYLE, source="x/recovery.parquet"
        )  # noqa: E501


def test_emergence_figure(tmp_path):
    rows = []
    for step in (10, 20, 30):
        for kind in ("lora", "sae"):
            for f in range(12):
                cat = ("a", "b", None)[f % 3]
                rows.append(
                    dict(member=f"c{step}", rank=1, seed=1, step=step, kind=kind,
                         feature=f, label=str(f), category=cat, classification=f % 3,
                         matched=f < step // 3, threshold=0.7)
                )  # fmt: skip
    members = [Member("ref", 1, 1, None, Path("."))] + [
        Member(f"c{s}", 1, 1, s, Path(".")) for s in (10, 20, 30)
    ]
    curve, _ = emergence_curve(pl.DataFrame(rows), members, members[0])
    data = FigureData({"curve": curve}, {"curve": "sweeps/emergence.parquet"})
    drawn = emergence.draw(data, {}, STYLE)
    assert len(drawn.fig.axes) == 2
    assert ">= 0.7" in drawn.note
    assert "LoRA directions\n(n=12)" in _texts(drawn.fig)
    _save(drawn.fig, tmp_path, "fig_emergence")
