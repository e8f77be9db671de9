"""Write synthetic upstream artifacts of the figure rules into a run dir.

Used by tests/workflow/test_figures_workflow.py: the figure and dashboard rules then
run for real (snakemake CLI) without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import figures_synth as S
import numpy as np
import polars as pl

from lorascope.evaluation.tables import table1, table2

KINDS = ("lora", "mlp", "sae")


def write_inputs(run_dir: Path, seed: int = 0) -> list[Path]:
    """Every input of rules figure_* and dashboards; returns the paths."""
    rng = np.random.default_rng(seed)
    out: list[Path] = []

    def put(rel: str, df) -> None:
        path = run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        df.write_parquet(path)
        out.append(path)

    put("autointerp/summary/classes.parquet", S.classes(rng))
    put("autointerp/summary/category_shares.parquet", S.category_shares(rng))
    put("autointerp/summary/sae_category_density.parquet", S.sae_density(rng))
    put("autointerp/summary/scores.parquet", S.score_means(rng))
    layers, comps = S.kl_tables(rng, n_layers=4)
    put("ablation/kl_layers.parquet", layers)
    put("ablation/kl_components.parquet", comps)
    put("steering/sweep.parquet", S.steering_sweep())
    correct = {
        b: {
            v: rng.random(40) < p
            for v, p in zip(
                ("base", "rank1", "full", "rank1-attn-ablated", "rank1-mlp-ablated"),
                (0.3, 0.5, 0.6, 0.45, 0.35),
                strict=True,
            )
        }
        for b in ("toy_add3", "toy_add4")
    }
    put("tables/table1.parquet", table1(correct, n_boot=50))
    put("tables/table2.parquet", table2(correct, n_boot=50))
    for kind, n in (("lora", 28), ("mlp", 8), ("sae", 12)):
        for name, df in S.dashboard_kind(kind, n, rng).items():
            folder = {
                "features": "features/{k}/features",
                "contexts": "features/{k}/contexts",
            }.get(name, f"autointerp/{name}/{{k}}")
            put(folder.format(k=kind) + ".parquet", df)
    for name, df in S.causal_tables(rng, 28, 12).items():
        put(f"ablation/{name}.parquet", df)
    for name, df in beyond_paper_tables(rng, {"lora": 28, "sae": 12}).items():
        put(name, df)
    for rel, obj in (
        ("autointerp/categories.json", S.categories_json()),
        (
            "autointerp/usage.json",
            {
                "explainer": {
                    "explanations": ["offline"],
                    "categories": "offline",
                    "detection_judge": ["offline"],
                }
            },
        ),
    ):
        path = run_dir / rel
        path.write_text(json.dumps(obj))
        out.append(path)
    return out


def beyond_paper_tables(rng, n_features: dict[str, int]) -> dict[str, pl.DataFrame]:
    """The dashboards' inputs from the attribution and diffing stages, in
    their contracts' columns (docs/ARCHITECTURE.md): every feature's
    attribution per target, one behaviour set, each feature's cosines with
    Δh_full's principal directions."""
    attribution = pl.concat(
        pl.DataFrame(
            {
                "kind": kind,
                "feature": np.repeat(np.arange(n), 2),
                "target": ["backtrack", "loss"] * n,
                "effect": rng.normal(size=2 * n),
                "effect_lo": -1.0,
                "effect_hi": 1.0,
                "support": rng.normal(size=2 * n),
                "rank": np.repeat(np.arange(1, n + 1), 2),
                "n_sequences": 3,
            }
        )  # fmt: skip
        for kind, n in n_features.items()
    )
    sets = pl.DataFrame(
        {"target": ["-", "backtrack"], "set": ["full", "top"],
         "test": ["reference", "necessity"], "reference": ["base", "floor"],
         "metric": ["accuracy"] * 2, "value": [1.0, 0.5], "delta": [0.5, -0.5],
         "delta_lo": [0.4, -0.6], "delta_hi": [0.6, -0.4], "n": [4, 4],
         "latents": [[], [3, 7]], "random_mean": [None, -0.1],
         "random_min": [None, -0.2], "random_max": [None, 0.0],
         "vs_random": [None, -0.4], "vs_random_lo": [None, -0.5],
         "vs_random_hi": [None, -0.3], "random_below": [None, 0.0]}
    )  # fmt: skip
    pcs = pl.DataFrame(
        {"kind": "sae", "key": np.repeat(np.arange(4), 2), "layer": 1,
         "direction": "write", "pc": [0, 1] * 4, "explained": [0.6, 0.2] * 4,
         "cosine": rng.random(8)}
    )  # fmt: skip
    return {
        "attribution/features.parquet": attribution,
        "attribution/sets.parquet": sets,
        "diffing/feature_pcs.parquet": pcs,
    }
