"""The shared look of every paper figure, and how figures are saved.

Used by every rule in `workflow/rules/figures.smk` (through the figure
modules). One place sets the column width, fonts and colours so that all
figures match when they sit side by side in the paper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")  # figures are made in batch jobs with no display

import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402

from lorascope.core.io import atomic_path  # noqa: E402

# One colour per feature kind, used in every figure and in the dashboards so
# a reader learns it once. Colour-blind safe (Okabe-Ito).
KIND_COLORS = {"lora": "#0072B2", "mlp": "#999999", "sae": "#D55E00"}
KIND_NAMES = {"lora": "LoRA directions", "mlp": "MLP neurons", "sae": "SAE features"}
KIND_SHORT = {"lora": "LoRA", "mlp": "MLP", "sae": "SAE"}
# The explainer's three interpretability classes (paper App. B.1 prompt).
CLASS_NAMES = {0: "Monosemantic", 1: "Broad but\nconsistent", 2: "Polysemantic"}
MODULE_ORDER = ["q", "k", "v", "o", "gate", "up", "down"]


@dataclass(frozen=True)
class FigureStyle:
    """Page geometry and fonts shared by all figures (config key `figures`;
    defaults and bounds in the schema)."""

    width_in: float
    """Width of one paper column in inches; every figure is drawn at it."""
    font_size: float
    """Base font size in points at that width (ticks are one point smaller)."""
    dpi: int
    """Resolution of raster outputs (PNG)."""

    @classmethod
    def from_config(cls, figures_cfg: Mapping[str, Any]) -> FigureStyle:
        return cls(*(figures_cfg[k] for k in ("width_in", "font_size", "dpi")))

    def size(self, height_ratio: float) -> tuple[float, float]:
        """(width, height) in inches for a figure `height_ratio` times as tall."""
        return (self.width_in, self.width_in * height_ratio)


@contextlib.contextmanager
def paper_rc(style: FigureStyle) -> Iterator[None]:
    """Matplotlib settings for print: small fonts, thin lines, no top/right spines."""
    fs = style.font_size
    with matplotlib.rc_context(
        {
            "font.size": fs,
            "axes.titlesize": fs,
            "axes.labelsize": fs,
            "xtick.labelsize": fs - 1,
            "ytick.labelsize": fs - 1,
            "legend.fontsize": fs - 1,
            "legend.frameon": False,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.linewidth": 0.6,
            "xtick.major.width": 0.6,
            "ytick.major.width": 0.6,
            "lines.linewidth": 1.2,
            "savefig.bbox": "tight",
            "savefig.pad_inches": 0.02,
            "pdf.fonttype": 42,  # embed TrueType so journals accept the PDF
            "figure.dpi": 100,
        }
    ):
        yield


def add_footer(fig: plt.Figure, text: str, style: FigureStyle) -> None:
    """Small grey note under everything already drawn (call it last)."""
    # Place it below the lowest artist (tick labels, axis labels, colorbars) so
    # it never overlaps them, whatever the figure's layout.
    bottom_in = fig.get_tightbbox(fig.canvas.get_renderer()).y0
    y = bottom_in / fig.get_figheight() - 0.01
    fig.text(
        0.99,
        y,
        text,
        ha="right",
        va="top",
        fontsize=style.font_size - 2,
        color="#555555",
    )


def require_columns(df: pl.DataFrame, columns: Iterable[str], source: str) -> None:
    """Fail naming the file and the missing columns instead of a KeyError later."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {missing}; it has {df.columns} "
            "(see docs/ARCHITECTURE.md, 'Figures inputs')"
        )
    if df.height == 0:
        raise ValueError(f"{source}: no rows; there is nothing to plot")


def save_figure(fig: plt.Figure, paths: Iterable[Path | str], dpi: int) -> None:
    """Write the figure to every path (format from the suffix), atomically."""
    for path in paths:
        path = Path(path)
        fmt = path.suffix.lstrip(".")
        if fmt not in ("png", "pdf", "svg"):
            raise ValueError(f"{path}: unsupported figure format {fmt!r}")
        with atomic_path(path) as tmp:
            # tight bbox keeps footers and long tick labels inside the file
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=0.02)
    plt.close(fig)


class Figure(NamedTuple):
    """What a figure module's `draw` returns."""

    fig: plt.Figure
    """The figure, saved as PNG and PDF by rule figure_<name>."""
    tables: dict[str, pl.DataFrame] = {}
    """Tables written beside it (`figures/<name>.<key>` for each key the
    figure table lists), e.g. the statistics a figure shows."""
    note: str = ""
    """One line for the rule's log, e.g. which explainer made the labels."""


class FigureData(dict):
    """A figure's inputs by name, read (parquet -> DataFrame, json -> dict),
    and the paths they came from, for footers that name their source."""

    def __init__(self, frames: Mapping[str, Any], paths: Mapping[str, str]):
        super().__init__(frames)
        self.paths = dict(paths)

    def source(self, name: str) -> str:
        return self.paths[name]
