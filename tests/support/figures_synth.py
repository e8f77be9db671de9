"""Synthetic artifacts in the documented schemas, for figure and dashboard tests.

Sizes follow the paper's shapes scaled down (`n_layers` layers x 7 modules);
values are random but structured (later layers and gate_proj matter more) so
the plots look like the real thing and bugs in axes or ordering show.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.core.contexts import CONTEXT_SCHEMA

MODULES = ["q", "k", "v", "o", "gate", "up", "down"]
WORDS = [
    w if w in ",.:^" else " " + w
    for w in (
        "Wait , so the answer is 4 / 3 \\pi r ^ 3 . Hmm , let me check : x + y = 7 "
        "therefore Answer : 42"
    ).split()
]


CATEGORIES = [  # string_id, name, share among LoRA, among MLP
    ("math_operators", "Mathematical Operators", 0.17, 0.02),
    ("answer_markers", "Answer and Solution Markers", 0.12, 0.04),
    ("procedural", "Instruction and Procedural Markers", 0.13, 0.06),
    ("discourse", "Discourse and Reasoning Markers", 0.2, 0.15),
    ("numbers", "Numbers and Quantities", 0.1, 0.13),
    ("syntax", "Syntax and Formatting", 0.18, 0.3),
    ("lexical", "General Lexical Semantics", 0.1, 0.3),
]
N_FEATURES = {"lora": 448, "mlp": 640, "sae": 300}
CLASS_P = {
    "lora": [0.22, 0.30, 0.48],
    "mlp": [0.20, 0.28, 0.52],
    "sae": [0.62, 0.22, 0.16],
}


def categories_json() -> dict:
    return {
        "categories": [
            {
                "string_id": c,
                "name": name,
                "definition": "...",
                "subcategories": [
                    {
                        "string_id": f"{c}_s{j}",
                        "name": f"{name.split()[0]} kind {j}",
                        "definition": "...",
                    }
                    for j in range(5)
                ],
            }
            for c, name, *_ in CATEGORIES
        ],
        "explainer": "offline",
    }


def explanations(rng: np.random.Generator) -> dict[str, pl.DataFrame]:
    """Per kind, the columns of autointerp/explanations/{kind}.parquet we need."""
    out = {}
    for kind, n in N_FEATURES.items():
        cls = rng.choice(3, size=n, p=CLASS_P[kind])
        status = np.where(rng.random(n) < 0.02, "failed", "ok")
        out[kind] = pl.DataFrame(
            {
                "feature": np.arange(n),
                "kind": kind,
                "classification": pl.Series(
                    [
                        int(c) if st == "ok" else None
                        for c, st in zip(cls, status, strict=True)
                    ],
                    dtype=pl.Int8,
                ),
                "status": status,
                "explainer": "offline",
            }
        )
    return out


def assignments(rng: np.random.Generator) -> dict[str, pl.DataFrame]:
    ids = [c[0] for c in CATEGORIES]
    out = {}
    for kind, n in N_FEATURES.items():
        p = np.array([c[2] if kind != "mlp" else c[3] for c in CATEGORIES])
        cat = rng.choice(ids, size=n, p=p / p.sum())
        sub = [f"{c}_s{min(int(rng.exponential(1.2)), 6)}" for c in cat]
        out[kind] = pl.DataFrame(
            {
                "feature": np.arange(n),
                "kind": kind,
                "category": cat,
                "subcategory": sub if kind == "sae" else [None] * n,
                "status": "ok",
            }
        )
    return out


def classes(rng: np.random.Generator) -> pl.DataFrame:
    from lorascope.autointerp.summary import class_shares

    return class_shares(explanations(rng), n_boot=200, seed=0)


def category_shares(rng: np.random.Generator | None = None) -> pl.DataFrame:
    from lorascope.autointerp.summary import category_shares as producer

    rng = rng or np.random.default_rng(0)
    return producer(assignments(rng), n_boot=200, seed=0)


def sae_density(rng: np.random.Generator) -> pl.DataFrame:
    from lorascope.autointerp.summary import sae_category_density

    n = N_FEATURES["sae"]
    feats = pl.DataFrame({"feature": np.arange(n), "mean": rng.gamma(1.0, size=n)})
    return sae_category_density(assignments(rng)["sae"], feats)


def score_means(rng: np.random.Generator) -> pl.DataFrame:
    """autointerp/summary/scores.parquet from synthetic score tables (one
    failed feature per kind: counted, not averaged in)."""
    from lorascope.autointerp.summary import score_means as producer

    tables = {}
    for kind, n in N_FEATURES.items():
        status = ["ok"] * (n - 1) + ["failed"]
        tables[kind] = pl.DataFrame(
            {
                "judge": ["offline"] * n,
                "status": status,
                "balanced_accuracy": rng.uniform(0.5, 1.0, n),
                "fuzzing_status": status,
                "fuzzing": rng.uniform(0.4, 1.0, n),
                "simulation_status": status,
                "simulation": rng.uniform(-0.1, 0.9, n),
            }
        )
    return producer(tables, n_boot=200, seed=0)


def kl_tables(rng: np.random.Generator, n_layers: int = 24) -> tuple:
    layer_effect = np.exp(np.linspace(-3, 0, n_layers)) * 1e-3
    comps = []
    for layer in range(n_layers):
        for m, module in enumerate(MODULES):
            boost = 6.0 if module == "gate" else (2.0 if m >= 4 else 0.5)
            kl = layer_effect[layer] * boost * rng.lognormal(0, 0.6)
            comps.append(
                (
                    layer * 7 + m,
                    layer,
                    module,
                    "mlp" if m >= 4 else "attn",
                    0,
                    kl,
                    kl * 0.1,
                )
            )
    comp = pl.DataFrame(
        comps,
        schema=[
            "index",
            "layer",
            "module",
            "group",
            "rank_slot",
            "kl_mean",
            "kl_seq_sem",
        ],
        orient="row",
    )
    layers = (
        comp.group_by("layer")
        .agg((pl.col("kl_mean").sum() * 1.3).alias("kl_mean"))
        .sort("layer")
        .with_columns(kl_seq_sem=pl.col("kl_mean") * 0.15)
    )
    return layers, comp


def table1() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "benchmark": ["AIME24 (no figures)", "MATH500", "GPQA-Diamond"],
            "base": [0.2333, 0.8340, 0.4899],
            "rank1": [0.5000, 0.9100, 0.5808],
            "full": [0.6000, 0.9220, 0.5909],
            "recovery": [0.7273, 0.8636, 0.8990],
        }
    )


def steering_sweep() -> pl.DataFrame:
    """Wide, as lorascope.steering.sweep.sweep writes it."""
    rows = []
    for i, label in enumerate(("L20.gate", "L21.up", "sae.17")):
        for alpha in (-50.0, -10.0, -1.0, 0.0, 1.0, 10.0, 50.0, 100.0):
            rows.append(
                {
                    "kind": "sae" if label.startswith("sae") else "component",
                    "id": i,
                    "label": label,
                    "selection": "config",
                    "alpha": alpha,
                    "kl_to_unsteered": 1e-3 * alpha**2 * (i + 1),
                    "accuracy": max(0.0, 0.6 - 0.004 * abs(alpha) * (i + 1)),
                    "n_samples": 40,
                    "backtrack_per_1k_tokens": 2 + 0.05 * abs(alpha) ** 1.2 * (i + 1),
                }
            )
    return pl.DataFrame(rows)


def dashboard_kind(
    kind: str, n: int, rng: np.random.Generator, n_ctx: int = 4, width: int = 12
) -> dict[str, pl.DataFrame]:
    """features/contexts/explanations/assignments/scores frames for one kind."""
    layer = [i // 7 for i in range(n)] if kind == "lora" else [None] * n
    module = [MODULES[i % 7] for i in range(n)] if kind == "lora" else [None] * n
    label = [
        f"L{i // 7}.{MODULES[i % 7]}+" if kind == "lora" else f"{kind}.{i}"
        for i in range(n)
    ]
    features = pl.DataFrame(
        {
            "feature": range(n),
            "kind": [kind] * n,
            "label": label,
            "layer": pl.Series(layer, dtype=pl.Int64),
            "module": pl.Series(module, dtype=pl.String),
            "max": rng.gamma(2.0, size=n).astype(np.float32) + 1,
            "mean": rng.random(n).astype(np.float32),
            "frac_active": rng.random(n).astype(np.float32),
        }
    )
    ctx = []
    for f in range(n):
        for r in range(n_ctx):
            start = int(rng.integers(0, len(WORDS) - width))
            toks = WORDS[start : start + width]
            acts = (rng.normal(0, 0.3, width)).astype(np.float32)
            center = int(rng.integers(0, width))
            acts[center] = 3.0 - r * 0.5
            ctx.append(
                (
                    f,
                    r,
                    r * 7 + f,
                    start + center,
                    float(acts[center]),
                    toks,
                    acts.tolist(),
                    center,
                    "top",
                )
            )
    contexts = pl.DataFrame(
        ctx,
        schema=CONTEXT_SCHEMA,
        orient="row",
    )
    cats = [c[0] for c in CATEGORIES]
    explanations = pl.DataFrame(
        {
            "feature": range(n),
            "kind": [kind] * n,
            "label": label,
            "explanation": [
                f"fires on '{WORDS[i % len(WORDS)]}' <b>tokens</b>" for i in range(n)
            ],
            "classification": pl.Series([i % 3 for i in range(n)], dtype=pl.Int8),
            "explainer": ["offline"] * n,
        }
    )
    assignments = pl.DataFrame(
        {
            "feature": range(n),
            "category": [cats[i % len(cats)] for i in range(n)],
            "subcategory": [f"sub{i % 2}" for i in range(n)],
        }
    )
    scores = pl.DataFrame(
        {
            "feature": range(n),
            "balanced_accuracy": rng.random(n),
            "n_pos": 5,
        }
    )
    return {
        "features": features,
        "contexts": contexts,
        "explanations": explanations,
        "assignments": assignments,
        "scores": scores,
    }


def causal_tables(
    rng: np.random.Generator, n_lora: int, n_sae: int, n_layers: int = 4
) -> dict[str, pl.DataFrame]:
    """ablation/{feature_kl, direct_effects, sae_decoder, feature_accuracy}
    frames (issue 18)."""
    kinds = ["lora"] * n_lora + ["sae"] * n_sae
    features = [*range(n_lora), *range(n_sae)]
    kl = rng.gamma(1.0, 0.02, n_lora + n_sae)
    feature_kl = pl.DataFrame(
        {
            "kind": kinds,
            "feature": features,
            "kl_mean": kl,
            "kl_full_mean": kl + 0.1,
            "kl_floor": [0.0] * n_lora + [0.1] * n_sae,
        }
    ).with_columns(  # fmt: skip
        kl_rank=pl.col("kl_mean").rank("ordinal", descending=True).over("kind")
    )
    effects = pl.DataFrame(
        [
            (k, f, d, r, WORDS[(f + r) % len(WORDS)])
            for k, f in zip(kinds, features, strict=True)
            for d in ("promoted", "suppressed")
            for r in range(3)
        ],
        schema=["kind", "feature", "direction", "rank", "token"],
        orient="row",
    )
    fingerprint = pl.DataFrame(
        [
            (f, layer, m, float(rng.normal()))
            for f in range(n_sae)
            for layer in range(n_layers)
            for m in MODULES
        ],
        schema=["feature", "layer", "module", "weight"],
        orient="row",
    )
    delta = -rng.random(4) * 0.3
    accuracy = pl.DataFrame(
        {
            "benchmark": ["toy_add2"] * 4,
            "kind": ["sae", "sae", "component", "component"],
            "feature": [0, 1, None, None],
            "component": [None, None, 0, 1],
            "accuracy": 0.5 + delta,
            "delta": delta,
            "delta_lo": delta - 0.1,
            "delta_hi": delta + 0.1,
            "reference": ["floor", "floor", "full", "full"],
            "n": [40] * 4,
        }
    )
    return {
        "feature_kl": feature_kl,
        "direct_effects": effects,
        "sae_decoder": fingerprint,
        "feature_accuracy": accuracy,
    }
