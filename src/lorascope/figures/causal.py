"""Causal effect against interpretability (beyond the paper; issue 18).

Used by rule `figure_causal` (workflow/rules/figures.smk) on
`ablation/feature_kl.parquet` (`lorascope.causal.feature_effects`) and the
autointerp tables of each kind (`explanations`: classification; `scores`:
`balanced_accuracy`, the detection score). One column per kind (LoRA
directions, SAE features): top, ablation KL against the detection score,
coloured by class; bottom, ablation KL per class. Each panel names the
Spearman correlation with a bootstrap 95% interval over features: are the
features an LLM finds interpretable the ones that matter for the output?
Features without an explanation (too few contexts) are left out, counted.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from scipy.stats import spearmanr

from lorascope.core.labels import explainer_label
from lorascope.figures.style import (
    Figure,
    FigureStyle,
    add_footer,
    paper_rc,
    require_columns,
)

__all__ = ["causal_frame", "plot_causal", "rank_correlation"]

CLASSES = {0: "mono", 1: "broad", 2: "poly"}
CLASS_COLORS = {0: "#1b9e77", 1: "#7570b3", 2: "#d95f02"}
KIND_TITLES = {"lora": "LoRA directions", "sae": "SAE features"}


def causal_frame(
    feature_kl: pl.DataFrame,
    explanations: dict[str, pl.DataFrame],
    scores: dict[str, pl.DataFrame],
) -> pl.DataFrame:
    """kind, feature, kl_mean, classification, detection (explained rows only)."""
    require_columns(feature_kl, ["kind", "feature", "kl_mean"], "feature_kl.parquet")
    parts = []
    for kind in explanations:
        require_columns(
            explanations[kind], ["feature", "classification"], f"explanations/{kind}"
        )
        require_columns(
            scores[kind], ["feature", "balanced_accuracy"], f"scores/{kind}"
        )
        kl = feature_kl.filter(pl.col("kind") == kind).select("feature", "kl_mean")
        if kl.is_empty():
            raise ValueError(f"feature_kl.parquet: no rows of kind {kind!r}")
        parts.append(
            kl.join(
                explanations[kind].select("feature", "classification"), on="feature"
            )
            .join(
                scores[kind].select(
                    "feature", pl.col("balanced_accuracy").alias("detection")
                ),
                on="feature",
                how="left",
            )
            .with_columns(kind=pl.lit(kind))
        )
    return pl.concat(parts).drop_nulls("classification")


def rank_correlation(
    x: np.ndarray, y: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float, float, int]:
    """Spearman rho and a percentile bootstrap 95% interval; n pairs used.
    NaN when fewer than 3 finite pairs or a constant variable."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan"), n
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(spearmanr(x[i], y[i]).statistic)
    if not boots:
        return rho, float("nan"), float("nan"), n
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return rho, float(lo), float(hi), n


def _rho_text(name: str, r: tuple[float, float, float, int]) -> str:
    rho, lo, hi, n = r
    if np.isnan(rho):
        return f"ρ({name}) n/a, n={n}"
    return f"ρ({name}) = {rho:.2f}\n[{lo:.2f}, {hi:.2f}], n={n}"


def plot_causal(
    frame: pl.DataFrame,
    kinds: list[str],
    style: FigureStyle,
    n_boot: int,
    seed: int,
    footer: str | None = None,
) -> tuple[plt.Figure, pl.DataFrame]:
    """The figure and its correlation table (kind, against, rho, lo, hi, n)."""
    stats = []
    with paper_rc(style):
        fig, axes = plt.subplots(
            2, len(kinds), figsize=style.size(1.15), squeeze=False, sharey="col"
        )
        for col, kind in enumerate(kinds):
            sub = frame.filter(pl.col("kind") == kind)
            kl = sub["kl_mean"].to_numpy().astype(float)
            det = sub["detection"].fill_null(np.nan).to_numpy().astype(float)
            cls = sub["classification"].to_numpy()
            positive = kl[kl > 0]
            thresh = float(positive.min()) if len(positive) else 1e-6
            r_det = rank_correlation(det, kl, n_boot, seed)
            r_cls = rank_correlation(cls.astype(float), kl, n_boot, seed)
            stats += [(kind, "detection", *r_det), (kind, "class", *r_cls)]
            top, bottom = axes[0, col], axes[1, col]
            for c, name in CLASSES.items():
                m = cls == c
                top.scatter(det[m], kl[m], s=6, color=CLASS_COLORS[c], label=name)
                if m.any():
                    bottom.scatter(
                        np.full(m.sum(), c) + np.linspace(-0.2, 0.2, m.sum()),
                        kl[m], s=5, color=CLASS_COLORS[c],
                    )  # fmt: skip
            for ax in (top, bottom):
                ax.set_yscale("symlog", linthresh=thresh)
            small = style.font_size - 1
            title = f"{KIND_TITLES.get(kind, kind)}\n{_rho_text('det', r_det)}"
            top.set_title(title, fontsize=small)
            top.set_xlabel("detection score")
            bottom.set_title(_rho_text("class", r_cls), fontsize=small)
            bottom.set_xticks(list(CLASSES), list(CLASSES.values()))
            bottom.set_xlim(-0.6, 2.6)
        axes[0, 0].set_ylabel("ablation KL")
        axes[1, 0].set_ylabel("ablation KL")
        axes[0, 0].legend(loc="best", handletextpad=0.2, markerscale=1.5)
        fig.tight_layout()
        if footer:
            add_footer(fig, footer, style)
    table = pl.DataFrame(
        stats,
        schema=["kind", "against", "rho", "ci_low", "ci_high", "n"],
        orient="row",
    )
    return fig, table


KINDS = ["lora", "sae"]


def draw(data: dict, options: dict, style: FigureStyle) -> Figure:
    """Ablation KL against interpretability per kind (rule figure_causal);
    its statistics table is written beside the figure."""
    footer = explainer_label(data["usage"])
    frame = causal_frame(
        data["feature_kl"],
        {k: data[f"explanations_{k}"] for k in KINDS},
        {k: data[f"scores_{k}"] for k in KINDS},
    )
    fig, stats = plot_causal(
        frame, KINDS, style, options["bootstrap_samples"], options["seed"], footer
    )
    return Figure(fig, {"stats": stats}, note=footer)
