"""Figure functions on synthetic frames in the documented schemas."""

from __future__ import annotations

import figures_synth as S
import numpy as np
import polars as pl
import pytest
from matplotlib.text import Text
from PIL import Image

from lorascope.core.labels import explainer_label
from lorascope.evaluation.tables import table1
from lorascope.figures import (
    ablation,
    categories,
    classes,
    sae_density,
    scores,
    steering,
    table_image,
)
from lorascope.figures.style import FigureStyle, save_figure

STYLE = FigureStyle(width_in=3.5, font_size=8, dpi=120)
FOOT = "labels: offline explainer"


def _texts(fig) -> str:
    return " ".join(t.get_text() for t in fig.findobj(Text))


def _save(fig, tmp_path, name):
    paths = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    save_figure(fig, paths, STYLE.dpi)
    for p in paths:
        assert p.stat().st_size > 1000, p
    with Image.open(paths[0]) as im:
        w, h = im.size
    # drawn at one column width (tight bbox trims or adds a little)
    assert 0.8 * STYLE.width_in * STYLE.dpi < w < 1.5 * STYLE.width_in * STYLE.dpi
    assert h > 100
    assert paths[1].read_bytes().startswith(b"%PDF")
    return paths


def test_wilson_interval_known_values():
    lo, hi = classes.wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = classes.wilson_interval(50, 100)
    assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-3)
    with pytest.raises(ValueError, match="n must be in"):
        classes.wilson_interval(11, 10)


def test_classes_figure(tmp_path):
    df = S.classes(np.random.default_rng(0))
    fr = classes.class_fractions(df, ["lora", "mlp", "sae"])
    sums = fr.group_by("kind").agg(pl.col("frac").sum())["frac"].to_list()
    assert sums == pytest.approx([1.0, 1.0, 1.0])
    assert (fr["lo"] <= fr["frac"]).all() and (fr["frac"] <= fr["hi"]).all()
    fig = classes.plot_classes(df, ["lora", "mlp", "sae"], STYLE, FOOT)
    ax = fig.axes[0]
    assert len(ax.patches) == 9  # 3 classes x 3 kinds
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    n_lora = int(df.filter(pl.col("kind") == "lora")["n_ok"][0])
    assert legend[0] == f"LoRA (n={n_lora})"
    assert FOOT in _texts(fig)
    _save(fig, tmp_path, "classes")


def test_classes_missing_kind_names_the_file():
    df = S.classes(np.random.default_rng(0)).filter(pl.col("kind") != "sae")
    with pytest.raises(ValueError, match="no rows for kind 'sae'"):
        classes.class_fractions(df, ["lora", "sae"], source="x/classes.parquet")
    with pytest.raises(ValueError, match=r"x/classes.parquet: missing column.*ci_low"):
        classes.class_fractions(df.drop("ci_low"), ["lora"], source="x/classes.parquet")


def test_scores_figure_draws_each_scorer_and_counts_failures(tmp_path):
    df = S.score_means(np.random.default_rng(0))
    fig = scores.plot_scores(df, ["lora", "mlp", "sae"], STYLE, FOOT)
    ax = fig.axes[0]
    names = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert names == ["detection", "fuzzing", "simulation"]
    assert len(ax.lines) >= 9  # a point per (kind, scorer)
    # one failed feature per kind, failed by each of the 3 scorers
    assert f"{FOOT}; 95% bootstrap intervals; 9 failed replies" in _texts(fig)
    _save(fig, tmp_path, "scores")
    # a scorer not run (no mean anywhere) is left out, not drawn at 0
    off = df.with_columns(
        mean=pl.when(pl.col("scorer") == "fuzzing").then(None).otherwise("mean")
    )
    ax = scores.plot_scores(off, ["lora"], STYLE, FOOT).axes[0]
    assert len(ax.get_xticklabels()) == 2
    with pytest.raises(ValueError, match="x.parquet: missing column.*ci_low"):
        scores.plot_scores(df.drop("ci_low"), ["lora"], STYLE, FOOT, "x.parquet")


def test_categories_enrichment_and_figure(tmp_path):
    names = categories.category_names(S.categories_json())
    shares = S.category_shares()
    tab = categories.enrichment_table(shares, names)
    assert tab["category"][0] == "math_operators"  # most enriched first
    assert tab["name"][0] == "Mathematical Operators"
    lora = shares.filter(pl.col("kind") == "lora")
    assert tab["enrichment"].drop_nulls().to_list() == sorted(
        lora["enrichment"].drop_nulls().to_list(), reverse=True
    )
    fig = categories.plot_categories(shares, names, STYLE, FOOT)
    assert len(fig.axes[0].patches) == 2 * len(S.CATEGORIES)
    assert f"{tab['enrichment'][0]:.1f}×" in _texts(fig)
    _save(fig, tmp_path, "categories")


def test_categories_lora_only_category_leads():
    names = categories.category_names(S.categories_json())
    shares = S.category_shares().with_columns(
        enrichment=pl.when(pl.col("category") == "syntax")
        .then(None)
        .otherwise(pl.col("enrichment"))
    )
    tab = categories.enrichment_table(shares, names)
    assert tab["category"][0] == "syntax"
    with pytest.raises(ValueError, match="not in categories.json"):
        categories.enrichment_table(shares, {"syntax": "Syntax"})


def test_sae_density_rows_and_figure(tmp_path):
    dens = S.sae_density(np.random.default_rng(1))
    cj = S.categories_json()
    names = categories.category_names(cj)
    subs = sae_density.subcategory_names(cj)
    rows = sae_density.density_rows(dens, names, subs, max_subcategories=2)
    headers = [r for r in rows if r[3]]
    assert len(headers) == dens["category"].n_unique()
    assert sum(r[1] for r in headers) == pytest.approx(1.0)
    assert sum(r[1] for r in rows if not r[3]) == pytest.approx(1.0)
    assert [r[1] for r in headers] == sorted((r[1] for r in headers), reverse=True)
    assert headers[0][0] in names.values()
    fig = sae_density.plot_sae_density(dens, names, subs, STYLE, FOOT, 2)
    assert len(fig.axes[0].patches) == len(rows)
    _save(fig, tmp_path, "sae_density")


def test_ablation_figure_panels(tmp_path):
    layers, comps = S.kl_tables(np.random.default_rng(2), n_layers=12)
    grid, modules, lay = ablation.component_grid(comps)
    assert grid.shape == (7, 12) and modules[4] == "gate"
    row = comps.filter((pl.col("layer") == 5) & (pl.col("module") == "up"))
    assert grid[5, 5] == pytest.approx(row["kl_mean"][0])
    fig = ablation.plot_ablation(layers, comps, STYLE)
    titles = [a.get_title(loc="left") for a in fig.axes]
    assert titles[0].startswith("(a)") and titles[1].startswith("(b)")
    assert len(fig.axes[0].patches) == 12  # one bar per layer
    _save(fig, tmp_path, "ablation")


def test_ablation_grid_of_a_rank2_adapter_shows_whole_modules():
    rows = [
        dict(layer=0, module="q", rank_slot=s, kl_mean=k, module_kl_mean=0.5)
        for s, k in ((0, 0.1), (1, 0.2))
    ]
    grid, modules, _ = ablation.component_grid(pl.DataFrame(rows))
    # The whole module removed (0.5), not the directions' mean (0.15).
    assert modules == ["q"] and grid[0, 0] == pytest.approx(0.5)
    old = pl.DataFrame(rows).drop("module_kl_mean")
    with pytest.raises(ValueError, match="no module_kl_mean column"):
        ablation.component_grid(old)


def test_ablation_unknown_module_fails_clearly():
    _, comps = S.kl_tables(np.random.default_rng(2), n_layers=2)
    comps = comps.with_columns(module=pl.lit("qkv_proj"))
    with pytest.raises(ValueError, match="unknown module name"):
        ablation.component_grid(comps)


def test_table_image(tmp_path):
    rng = np.random.default_rng(3)
    correct = {
        "AIME24": {
            v: rng.random(30) < p
            for v, p in (("base", 0.2), ("rank1", 0.5), ("full", 0.6))
        },
        "MATH500": {
            v: rng.random(50) < p
            for v, p in (("base", 0.8), ("rank1", 0.9), ("full", 0.92))
        },
    }
    t = table1(correct, n_boot=50)
    fig = table_image.plot_table(t, ["base", "rank1", "full", "recovery"], "T1", STYLE)
    cells = fig.axes[0].tables[0].get_celld()
    text = " ".join(c.get_text().get_text() for c in cells.values())
    assert len(cells) == 5 * (t.height + 1)
    assert "Rank-1 LoRA" in text and "%" in text and "[" in text
    _save(fig, tmp_path, "table1")
    assert table_image.format_cell("recovery", None) == "undefined"
    with pytest.raises(ValueError, match="missing column"):
        table_image.plot_table(t, ["nope"], "T1", STYLE)


def test_steering_figure(tmp_path):
    metrics = ["backtrack_per_1k_tokens", "accuracy", "kl_to_unsteered"]
    fig = steering.plot_steering(S.steering_sweep(), metrics, STYLE, FOOT)
    assert len(fig.axes) == 3
    assert len(fig.axes[0].get_lines()) == 3 + 1  # 3 targets + the alpha=0 rule
    _save(fig, tmp_path, "steering")
    with pytest.raises(ValueError, match="max_targets=2"):
        steering.plot_steering(S.steering_sweep(), metrics, STYLE, max_targets=2)


def test_explainer_label():
    off = {"explanations": ["offline"], "categories": "offline"}
    assert "offline explainer" in explainer_label({"explainer": off})
    llm = {
        "explanations": ["openai:gpt-5-mini"],
        "categories": "anthropic:claude-opus-4-1",
    }
    text = explainer_label({"explainer": llm})
    assert "openai:gpt-5-mini" in text and "categories: anthropic" in text
    with pytest.raises(KeyError, match="explainer"):
        explainer_label({"total": {}})


def test_failed_save_leaves_no_partial_file(tmp_path):
    fig = classes.plot_classes(
        S.classes(np.random.default_rng(0)), ["lora"], STYLE, FOOT
    )
    with pytest.raises(ValueError, match="unsupported figure format"):
        save_figure(fig, [tmp_path / "a.png", tmp_path / "b.tiff"], STYLE.dpi)
    assert (tmp_path / "a.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_readme_export_downscales_and_fails_clearly(tmp_path):
    from lorascope.figures.readme import export_small

    src = tmp_path / "figs"
    fig = classes.plot_classes(
        S.classes(np.random.default_rng(0)), ["lora", "mlp"], STYLE, FOOT
    )
    save_figure(fig, [src / "fig1_classes.png"], 300)
    (out,) = export_small(src, tmp_path / "docs", ["fig1_classes"], width=400)
    with Image.open(out) as im:
        assert im.width == 400
    with pytest.raises(FileNotFoundError, match="fig3_ablation.png"):
        export_small(src, tmp_path / "docs2", ["fig1_classes", "fig3_ablation"])
    assert not (tmp_path / "docs2").exists()
