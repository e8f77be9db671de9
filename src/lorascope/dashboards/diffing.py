"""The full fine-tune panel of the feature dashboards (rule `dashboards`;
issue 32): per LoRA direction and SAE feature, its |cosine| with the top
principal directions of Δh_full = h_full - h_base at its layer, from
`diffing/feature_pcs.parquet` (`lorascope.diffing.principal`): does the
direction point where full fine-tuning changed the residual stream most?
LoRA directions are keyed by component (both sign sides share it), SAE
features by latent; MLP neurons get no panel.
"""

from __future__ import annotations

import polars as pl

__all__ = ["pc_views"]

NEED = ["kind", "key", "layer", "direction", "pc", "explained", "cosine"]


def pc_views(kind: str, features: pl.DataFrame, pcs: pl.DataFrame) -> dict[int, dict]:
    """feature -> {layer, direction, rows: [{pc, explained, cosine}], best}."""
    missing = [c for c in NEED if c not in pcs.columns]
    if missing:
        raise ValueError(f"diffing/feature_pcs.parquet: missing column(s) {missing}")
    key = {"lora": "component", "sae": "latent"}.get(kind)
    if key is None or key not in features.columns:
        return {}
    by_key = {
        k: grp.sort("pc")
        for (k,), grp in pcs.filter(pl.col("kind") == kind).group_by("key")
    }
    out = {}
    for feature, k in features.select("feature", key).iter_rows():
        grp = by_key.get(k)
        if grp is None or grp.is_empty():
            continue
        rows = grp.select("pc", "explained", "cosine").to_dicts()
        out[feature] = {
            "layer": int(grp["layer"][0]),
            "direction": grp["direction"][0],
            "rows": rows,
            "best": max(rows, key=lambda r: r["cosine"] or 0.0),
        }
    return out
