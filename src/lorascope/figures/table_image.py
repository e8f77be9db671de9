"""Tables 1 and 2 drawn as images, for the report, the README and slides.

Used by rules `figure_table1`, `figure_table2` (workflow/rules/figures.smk) on
`tables/table1.parquet` and `tables/table2.parquet` as written by
`lorascope.evaluation.tables` (`benchmark, n`, then per value column `col, col_lo,
col_hi`). Which value columns to draw comes from the rule's params. Each
cell shows the value with its bootstrap interval on a second, smaller line;
columns whose name contains "recovery" are fractions printed as percentages.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import polars as pl

from lorascope.figures.style import Figure, FigureStyle, paper_rc, require_columns

__all__ = ["format_cell", "plot_table"]

HEADERS = {
    "benchmark": "Benchmark",
    "base": "Base",
    "rank1": "Rank-1 LoRA",
    "full": "Full FT",
    "recovery": "Recovery",
    "rank1-attn-ablated": "Attn-ablated",
    "rank1-mlp-ablated": "MLP-ablated",
    "attn_ablated_recovery": "Attn-abl. rec.",
    "mlp_ablated_recovery": "MLP-abl. rec.",
}


def format_cell(column: str, value, lo=None, hi=None) -> str:
    """'0.5000' or '72.73%', with '[lo, hi]' on a second line when known."""
    if value is None or value != value:  # None or NaN: recovery undefined
        return "undefined"
    pct = "recovery" in column.lower()
    text = f"{100 * value:.2f}%" if pct else f"{value:.4f}"
    if lo is not None and hi is not None:
        text += (
            f"\n[{100 * lo:.1f}, {100 * hi:.1f}]" if pct else f"\n[{lo:.3f}, {hi:.3f}]"
        )
    return text


def plot_table(
    table: pl.DataFrame,
    columns: Sequence[str],
    title: str,
    style: FigureStyle,
    source: str = "table",
    ci: float = 0.95,
) -> plt.Figure:
    require_columns(table, ["benchmark", *columns], source)
    has_ci = all(
        f"{c}_lo" in table.columns and f"{c}_hi" in table.columns for c in columns
    )
    cells = []
    for row in table.iter_rows(named=True):
        cells.append(
            [str(row["benchmark"])]
            + [
                format_cell(
                    c,
                    row[c],
                    row.get(f"{c}_lo") if has_ci else None,
                    row.get(f"{c}_hi") if has_ci else None,
                )
                for c in columns
            ]
        )
    header = [HEADERS.get(c, c) for c in ["benchmark", *columns]]
    n_rows = table.height
    with paper_rc(style):
        fig, ax = plt.subplots(figsize=style.size(0.14 + 0.11 * (n_rows + 1)))
        ax.axis("off")
        tab = ax.table(
            cellText=cells,
            colLabels=header,
            loc="upper center",
            cellLoc="center",
            edges="horizontal",
        )
        tab.auto_set_font_size(False)
        tab.set_fontsize(style.font_size - 1.5)
        tab.auto_set_column_width(list(range(len(header))))
        # booktabs look: rules above and below the header and under the last row
        for (r, c), cell in tab.get_celld().items():
            cell.visible_edges = "TB" if r == 0 else ("B" if r == n_rows else "")
            cell.set_linewidth(0.6)
            cell.set_height((0.7 if r == 0 else 1.0) / (n_rows + 0.7))
            if r == 0:
                cell.set_text_props(fontweight="bold")
            if c == 0:
                cell.set_text_props(ha="left")
                cell.PAD = 0.02
        # on its own line: beside the title it is wider than a narrow table
        note = f"\n({ci:.0%} bootstrap intervals)" if has_ci else ""
        ax.set_title(title + note, loc="left", fontsize=style.font_size)
    return fig


TITLES = {
    "table1": "Table 1: accuracy and recovery of the rank-1 LoRA",
    "table2": "Table 2: the LoRA with attention / MLP parts ablated",
}


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """Table 1 or 2 as an image (rules figure_table1, figure_table2)."""
    name = options["table"]
    fig = plot_table(
        data["table"],
        list(options["columns"]),
        TITLES[name],
        style,
        source=data.source("table"),
        ci=options["ci"],
    )
    return Figure(fig)
