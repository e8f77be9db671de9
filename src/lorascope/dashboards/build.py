"""Static, offline feature dashboards (paper App. A; rule `dashboards`).

`build_dashboards(kinds, out_dir, explainer, options)` writes
`index.html` (every feature of every kind, sortable and filterable by kind,
layer, module, class, category and detection score), one page per feature
under `features/` (explanation, class, category, scores, an activation
histogram and the top contexts with each token shaded by its activation,
value on hover) and the shared `static/` CSS and JS. Nothing is fetched from
the network: the pages open from disk.

`kinds` maps a kind (lora, mlp, sae) to a `KindTables` of the frames
documented in docs/ARCHITECTURE.md ("Figures inputs").
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
import polars as pl

from lorascope.core.feature_tables import contexts_by_feature
from lorascope.dashboards.attribution import (
    attribution_views,
    index_support,
    index_target,
    write_set_pages,
)
from lorascope.dashboards.causal import CausalTables, causal_views
from lorascope.dashboards.diffing import pc_views

__all__ = ["KindTables", "DashboardOptions", "feature_rows", "build_dashboards"]

CLASS_NAMES = {0: "monosemantic", 1: "broad but consistent", 2: "polysemantic"}
# The detection score: balanced accuracy of the judge telling a feature's top
# contexts from others, given only the explanation (lorascope.autointerp.scoring).
DETECTION = "balanced_accuracy"
# Columns of feature_rows shown in their own places (the rest: score rows).
SHOWN = ("feature", "label", "layer", "module", "max", "mean", "frac_active")
SHOWN += ("explanation", "classification", "category", "subcategory")
SHOWN += ("detection", "kind", "page", "direction")


@dataclass
class KindTables:
    """The four frames of one feature kind."""

    features: pl.DataFrame
    contexts: pl.DataFrame
    explanations: pl.DataFrame
    assignments: pl.DataFrame
    scores: pl.DataFrame


@dataclass(frozen=True)
class DashboardOptions:
    """Config key `figures.dashboards` (defaults and bounds in the schema)."""

    contexts_per_feature: int
    """Top contexts shown on a feature page (the explainer saw up to 64)."""
    histogram_bins: int

    @classmethod
    def from_config(cls, dashboards_cfg: dict) -> DashboardOptions:
        keys = ("contexts_per_feature", "histogram_bins")
        return cls(*(dashboards_cfg[k] for k in keys))


def _need(df: pl.DataFrame, cols: list[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; has {df.columns}")
    dup = df["feature"].is_duplicated()
    if dup.any():
        raise ValueError(
            f"{what}: feature {df.filter(dup)['feature'][0]} appears more than once"
        )


def feature_rows(kind: str, t: KindTables) -> pl.DataFrame:
    """One row per feature of `kind` with its labels and scores joined on."""
    _need(
        t.features,
        ["feature", "label", "layer", "module", "max", "mean", "frac_active"],
        f"features/{kind}/features.parquet",
    )
    _need(
        t.explanations,
        ["feature", "explanation", "classification"],
        f"autointerp/explanations/{kind}.parquet",
    )
    _need(
        t.assignments, ["feature", "category"], f"autointerp/assignments/{kind}.parquet"
    )
    _need(t.scores, ["feature", DETECTION], f"autointerp/scores/{kind}.parquet")
    assign = t.assignments.select(
        "feature",
        "category",
        *(["subcategory"] if "subcategory" in t.assignments.columns else []),
    )
    extra_scores = [
        c
        for c, dt in t.scores.schema.items()
        if c not in ("feature", DETECTION) and dt.is_float()
    ]
    return (
        t.features.select(
            "feature", "label", "layer", "module", "max", "mean", "frac_active"
        )
        .join(
            t.explanations.select("feature", "explanation", "classification"),
            on="feature",
            how="left",
        )
        .join(assign, on="feature", how="left")
        .join(
            t.scores.select(
                "feature", pl.col(DETECTION).alias("detection"), *extra_scores
            ),
            on="feature",
            how="left",
        )
        .with_columns(
            kind=pl.lit(kind),
            page=pl.format("features/{}-{}.html", pl.lit(kind), pl.col("feature")),
        )
        .with_columns(*_direction(kind, t.features))
        .sort("feature")
    )


def _direction(kind: str, features: pl.DataFrame) -> list[pl.Expr]:
    """For the directions of a rank > 1 adapter, the row of lora_A each
    feature reads (`direction`, from the `L3.gate#1+` label that
    lorascope.core.components.component_label gives); nothing at rank 1,
    where a module has one direction and the page is as it was."""
    if kind != "lora" or not features["label"].str.contains("#").any():
        return []
    return [
        pl.col("label")
        .str.extract(r"#(\d+)[+-]?$", 1)
        .cast(pl.Int64)
        .alias("direction")
    ]


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _token_text(tok: str) -> str:
    # keep layout: newlines and tabs would break the one-line context view
    return tok.replace("\n", "↵").replace("\t", "⇥")


def context_view(rows: list[dict]) -> tuple[list[dict], float]:
    """Contexts ready for the template; shading scale = max |act| over them."""
    scale = max((abs(a) for r in rows for a in r["acts"]), default=0.0) or 1.0
    out = []
    for r in rows:
        toks = [
            {
                "text": _token_text(tok),
                "act": float(a),
                "alpha": round(abs(a) / scale, 3),
                "neg": a < 0,
                "center": i == r["center"],
            }
            for i, (tok, a) in enumerate(zip(r["tokens"], r["acts"], strict=True))
        ]
        out.append(
            {
                "rank": r["rank"],
                "doc": r["doc"],
                "pos": r["pos"],
                "value": float(r["value"]),
                "tokens": toks,
            }
        )
    return out, scale


def histogram_svg(
    values: np.ndarray, bins: int, width: int = 360, height: int = 120
) -> str:
    """A small inline SVG bar histogram (no JS, no external assets)."""
    if values.size == 0:
        return "<p class='muted'>no activations recorded</p>"
    counts, edges = np.histogram(values, bins=bins)
    top = counts.max()
    bw = width / bins
    bars = "".join(
        f"<rect x='{i * bw:.1f}' y='{height - 15 - (c / top) * (height - 20):.1f}' "
        f"width='{bw - 1:.1f}' height='{(c / top) * (height - 20):.1f}'>"
        f"<title>[{edges[i]:.3g}, {edges[i + 1]:.3g}): {c}</title></rect>"
        for i, c in enumerate(counts)
    )
    axis = (
        f"<text x='0' y='{height - 2}'>{edges[0]:.3g}</text>"
        f"<text x='{width}' y='{height - 2}' text-anchor='end'>{edges[-1]:.3g}</text>"
    )
    return (
        f"<svg class='hist' viewBox='0 0 {width} {height}' width='{width}' "
        f"height='{height}' role='img'>{bars}{axis}</svg>"
    )


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lorascope.dashboards", "assets"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    return env


def build_dashboards(
    kinds: dict[str, KindTables],
    out_dir: Path,
    explainer: str,
    options: DashboardOptions,
    causal: CausalTables | None = None,
    diffing: pl.DataFrame | None = None,
    attribution: pl.DataFrame | None = None,
    sets: pl.DataFrame | None = None,
) -> int:
    """Write the dashboard site into `out_dir` (created); returns #feature pages.
    With `causal`, pages show ablation KL, token effects and SAE decoder maps;
    with `diffing` (diffing/feature_pcs.parquet), each LoRA direction's / SAE
    feature's cosines with Δh_full's principal directions at its layer; with
    `attribution`, each feature's attribution per target (the index sorts by
    it); with `sets`, one page per behaviour set."""
    if not kinds:
        raise ValueError("figures.dashboards.kinds is empty: no feature kind to show")
    env = _env()
    out_dir = Path(out_dir)
    (out_dir / "features").mkdir(parents=True, exist_ok=True)
    static = resources.files("lorascope.dashboards") / "assets"
    (out_dir / "static").mkdir(exist_ok=True)
    for name in ("dashboard.css", "dashboard.js"):
        with resources.as_file(static / name) as src:
            shutil.copyfile(src, out_dir / "static" / name)
    page = env.get_template("feature.html.jinja")
    all_rows = []
    for kind, tables in kinds.items():
        rows = feature_rows(kind, tables)
        ctx = contexts_by_feature(
            tables.contexts,
            options.contexts_per_feature,
            f"features/{kind}/contexts.parquet",
        )
        score_cols = [c for c in rows.columns if c not in SHOWN]
        views = causal_views(kind, causal) if causal is not None else None
        pcs = {} if diffing is None else pc_views(kind, tables.features, diffing)
        attr = attribution_views(kind, attribution) if attribution is not None else None
        for row in rows.iter_rows(named=True):
            contexts, scale = context_view(ctx.get(row["feature"], []))
            acts = np.array([t["act"] for c in contexts for t in c["tokens"]])
            html = page.render(
                f=row,
                kind=kind,
                class_name=CLASS_NAMES.get(row["classification"]),
                contexts=contexts,
                scale=scale,
                explainer=explainer,
                hist=histogram_svg(acts, options.histogram_bins),
                scores={c: row[c] for c in score_cols},
                causal=None if views is None else views.get(row["feature"]),
                has_causal=views is not None,
                pcs=pcs.get(row["feature"]),
                attribution=None if attr is None else attr.get(row["feature"]),
                has_attribution=attr is not None,
            )
            (out_dir / row["page"]).write_text(html, encoding="utf-8")
        kl = [(views or {}).get(f, {}).get("kl") for f in rows["feature"]]
        support = (
            index_support(kind, attribution, index_target(attribution))
            if attribution is not None
            else {}
        )
        attr_col = [support.get(f) for f in rows["feature"]]
        all_rows.append(
            rows.with_columns(
                kl=pl.Series(kl, dtype=pl.Float64),
                attr=pl.Series(attr_col, dtype=pl.Float64),
            ).select(
                "kind",
                "feature",
                "label",
                "layer",
                "module",
                "classification",
                "category",
                "detection",
                "kl",
                "attr",
                "explanation",
                "page",
            )
        )
    index = pl.concat(all_rows, how="vertical_relaxed")
    set_pages = write_set_pages(sets, env, out_dir) if sets is not None else []
    (out_dir / "index.html").write_text(
        env.get_template("index.html.jinja").render(
            rows=index.to_dicts(),
            class_names=CLASS_NAMES,
            explainer=explainer,
            kinds=list(kinds),
            has_causal=causal is not None,
            attr_target=None if attribution is None else index_target(attribution),
            set_pages=set_pages,
        ),
        encoding="utf-8",
    )
    return index.height
