"""Write synthetic upstream artifacts of the figure rules into a run dir.

Used by tests/workflow/test_figures_workflow.py: the figure and dashboard rules then
run for real (snakemake CLI) without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import figures_synth as S
import numpy as np

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
