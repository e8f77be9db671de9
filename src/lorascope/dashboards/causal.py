"""Causal panels of the feature dashboards (rule `dashboards`; issue 18).

Reads `ablation/feature_kl.parquet` (ablation KL per LoRA direction and SAE
feature), `ablation/direct_effects.parquet` (promoted / suppressed tokens,
logit lens) and `ablation/sae_decoder.parquet` (each SAE feature's decoder
weight per component), and optionally `ablation/feature_accuracy.parquet`
(benchmark accuracy with the top features / components removed), and gives,
per (kind, feature): the KL numbers for the facts table, the accuracy change
where it was measured, the token lists, and for SAE features a layer x
module heatmap of the decoder row (an inline SVG, no JS). A LoRA direction's
accuracy is its component's (ablating a component removes both sign sides).
Kinds these tables do not cover (mlp) get no causal panel; the page says so.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["CausalTables", "causal_views", "fingerprint_svg"]

MODULES = ["q", "k", "v", "o", "gate", "up", "down"]


@dataclass
class CausalTables:
    """The three ablation-stage frames the causal panels read."""

    feature_kl: pl.DataFrame
    direct_effects: pl.DataFrame
    fingerprint: pl.DataFrame
    accuracy: pl.DataFrame | None = None

    def __post_init__(self):
        need = {
            "feature_kl": ["kind", "feature", "kl_mean", "kl_rank", "kl_floor"],
            "direct_effects": ["kind", "feature", "direction", "rank", "token"],
            "fingerprint": ["feature", "layer", "module", "weight"],
            "accuracy": ["benchmark", "kind", "feature", "component", "accuracy"]
            + ["delta", "delta_lo", "delta_hi", "reference", "n"],
        }
        for name, cols in need.items():
            df = getattr(self, name)
            if df is None:
                continue
            missing = [c for c in cols if c not in df.columns]
            if missing:
                raise ValueError(
                    f"ablation/{name}.parquet: missing column(s) {missing}"
                    if name != "fingerprint"
                    else f"ablation/sae_decoder.parquet: missing column(s) {missing}"
                )


def _color(v: float, scale: float) -> str:
    """Diverging: orange positive, blue negative, white 0."""
    a = min(abs(v) / scale, 1.0) if scale > 0 else 0.0
    rgb = (230, 97, 1) if v > 0 else (33, 102, 172)
    mix = [round(255 + (c - 255) * a) for c in rgb]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def fingerprint_svg(rows: pl.DataFrame, cell: int = 16) -> str:
    """Layer (rows) x module (columns) heatmap of one feature's decoder row.
    Hover a cell for its weight. For a rank > 1 adapter (`rank_slot` above
    0) each module's cell is split into one stripe per direction (at least
    2 px each, hover `L3.gate#1: w`): the directions of a module are
    unrelated axes (each row of lora_A has its own sign), so their weights
    are shown apart, never summed."""
    if rows.is_empty():
        return "<p class='muted'>no decoder weights</p>"
    if "rank_slot" not in rows.columns:
        rows = rows.with_columns(rank_slot=pl.lit(0))
    grid = rows.group_by("layer", "module", "rank_slot").agg(pl.col("weight").sum())
    rank = int(grid["rank_slot"].max()) + 1
    stripe = max(cell // rank, 2)
    width_cell = stripe * rank
    layers = sorted(grid["layer"].unique().to_list())
    modules = [m for m in MODULES if m in set(grid["module"])]
    modules += sorted(set(grid["module"]) - set(modules))
    value = {(r[0], r[1], r[2]): r[3] for r in grid.iter_rows()}
    scale = float(np.abs(grid["weight"].to_numpy()).max())
    left, top = 28, 14
    parts = [
        f"<text x='{left + j * width_cell + width_cell / 2}' y='10' "
        f"text-anchor='middle'>{html.escape(m)}</text>"
        for j, m in enumerate(modules)
    ]
    for i, layer in enumerate(layers):
        y = top + i * cell
        parts.append(f"<text x='0' y='{y + cell - 4}'>L{layer}</text>")
        for j, m in enumerate(modules):
            for slot in range(rank):
                v = value.get((layer, m, slot))
                if v is None:
                    continue
                x = left + j * width_cell + slot * stripe
                # the last stripe leaves the 1 px gap between module cells
                w = stripe - (1 if slot == rank - 1 else 0)
                label = f"L{layer}.{html.escape(m)}" + (f"#{slot}" if rank > 1 else "")
                parts.append(
                    f"<rect x='{x}' y='{y}' width='{w}' height='{cell - 1}' "
                    f"fill='{_color(v, scale)}'><title>{label}: {v:.4g}</title></rect>"
                )
    width, height = left + len(modules) * width_cell, top + len(layers) * cell
    return (
        f"<svg class='fingerprint' viewBox='0 0 {width} {height}' width='{width}' "
        f"height='{height}' role='img'>{''.join(parts)}</svg>"
    )


def causal_views(kind: str, t: CausalTables) -> dict[int, dict]:
    """Per feature of `kind`: kl facts, promoted/suppressed tokens, fingerprint."""
    kl = t.feature_kl.filter(pl.col("kind") == kind)
    fx = t.direct_effects.filter(pl.col("kind") == kind).sort("rank")
    fp = t.fingerprint if kind == "sae" else t.fingerprint.clear()
    tokens: dict[tuple[int, str], list[str]] = {}
    for (feature, direction), grp in fx.group_by("feature", "direction"):
        tokens[(feature, direction)] = grp.sort("rank")["token"].to_list()
    prints = {f: grp for (f,), grp in fp.group_by("feature")}
    acc = {}
    if t.accuracy is not None:
        key = "feature" if kind == "sae" else "component"
        which = "sae" if kind == "sae" else "component"
        for row in t.accuracy.filter(pl.col("kind") == which).iter_rows(named=True):
            acc[row[key]] = row
    out = {}
    for row in kl.iter_rows(named=True):
        f = row["feature"]
        out[f] = {
            "kl": row["kl_mean"],
            "kl_rank": row["kl_rank"],
            "kl_floor": row["kl_floor"] if kind == "sae" else None,
            "kl_full": row.get("kl_full_mean"),
            "promoted": tokens.get((f, "promoted"), []),
            "suppressed": tokens.get((f, "suppressed"), []),
            "fingerprint": fingerprint_svg(prints[f]) if f in prints else None,
            "accuracy": acc.get(f if kind == "sae" else row.get("component")),
        }
    return out
