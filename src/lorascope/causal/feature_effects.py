"""The feature-ablation table (rule `feature_ablation`): LoRA directions and SAE
features keyed like the feature tables (docs/ARCHITECTURE.md).

`ablation/feature_kl.parquet`: `kind, feature, label, component, latent,
layer, module, kl_mean, kl_token_mean, kl_sequence_mean, kl_seq_sem,
kl_full_mean, kl_floor, kl_rank, mean_code, frac_active, n_sequences,
n_tokens`. For SAE features `kl_mean` is KL(q_floor || q_without_f), relative
to the reconstruction floor (`lorascope.causal.feature_kl`), `kl_full_mean`
is KL(full || q_without_f) and `kl_floor` KL(full || q_floor). A LoRA
direction (component c, sign side +/-) takes its component's KL from
`ablation/kl_components.parquet`: removing the direction zeroes the scalar
(both sides), and there is no reconstruction, so the floor is 0.
`kl_rank` is 1 for the largest `kl_mean` within a kind.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.causal.feature_kl import FeatureKL

__all__ = ["feature_kl_table", "lora_rows", "sae_rows"]

KEYS = ["kind", "feature", "label", "component", "latent", "layer", "module"]


def _average(kl_GS: np.ndarray, tokens_S: np.ndarray, average: str) -> dict:
    n_seq = kl_GS.shape[1]
    pooled_G = kl_GS @ tokens_S / max(int(tokens_S.sum()), 1)
    seq_G = kl_GS.mean(axis=1)
    means = {"tokens": pooled_G, "sequences": seq_G}
    if average not in means:
        raise ValueError(f"ablation.average: unknown average {average!r}")
    sem = kl_GS.std(axis=1, ddof=1) / np.sqrt(n_seq) if n_seq > 1 else np.nan
    return {
        "kl_mean": means[average],
        "kl_token_mean": pooled_G,
        "kl_sequence_mean": seq_G,
        "kl_seq_sem": sem * np.ones(len(kl_GS)),
    }


def sae_rows(features: pl.DataFrame, out: FeatureKL, average: str) -> pl.DataFrame:
    """SAE feature rows; `out` has one feature set per features.parquet row."""
    latent_G = features["latent"].to_numpy()
    full = _average(out.kl_full_GS, out.tokens_S, average)["kl_mean"]
    floor = _average(out.floor_S[None], out.tokens_S, average)["kl_mean"][0]
    keys = features.select(
        pl.lit("sae").alias("kind"), "feature", "label",
        pl.lit(None, pl.Int64).alias("component"), pl.col("latent").cast(pl.Int64),
        pl.lit(None, pl.Int64).alias("layer"), pl.lit(None, pl.Utf8).alias("module"),
    )  # fmt: skip
    stats = _average(out.kl_floor_GS, out.tokens_S, average)
    return keys.with_columns(
        **{k: pl.Series(v) for k, v in stats.items()},
        kl_full_mean=pl.Series(full),
        kl_floor=pl.lit(float(floor)),
        mean_code=pl.Series(out.mean_code_F[latent_G]),
        frac_active=pl.Series(out.frac_active_F[latent_G].astype(np.float64)),
        n_sequences=pl.lit(len(out.tokens_S)),
        n_tokens=pl.lit(int(out.tokens_S.sum())),
    )


def lora_rows(features: pl.DataFrame, kl_components: pl.DataFrame) -> pl.DataFrame:
    """LoRA direction rows: each takes its component's ablation KL."""
    comps = kl_components.select(
        pl.col("index").alias("component"), "kl_mean", "kl_token_mean",
        "kl_sequence_mean", "kl_seq_sem", pl.col("kl_mean").alias("kl_full_mean"),
        pl.lit(0.0).alias("kl_floor"), "n_sequences", "n_tokens",
    )  # fmt: skip
    missing = set(features["component"].to_list()) - set(comps["component"])
    if missing:
        raise ValueError(
            f"features/lora/features.parquet: component(s) {sorted(missing)} not in "
            "ablation/kl_components.parquet (tables from different runs?)"
        )
    return features.select(
        pl.lit("lora").alias("kind"), "feature", "label",
        pl.col("component").cast(pl.Int64), pl.lit(None, pl.Int64).alias("latent"),
        pl.col("layer").cast(pl.Int64), "module",
        pl.lit(None, pl.Float64).alias("mean_code"),
        pl.col("frac_active").cast(pl.Float64),
    ).join(comps, on="component", how="left")  # fmt: skip


def feature_kl_table(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate kinds, add `kl_rank` within each kind, fixed column order."""
    cols = [*KEYS, "kl_mean", "kl_token_mean", "kl_sequence_mean", "kl_seq_sem"]
    cols += ["kl_full_mean", "kl_floor", "mean_code", "frac_active"]
    cols += ["n_sequences", "n_tokens"]
    df = pl.concat([p.select(cols) for p in parts], how="vertical_relaxed")
    rank = pl.col("kl_mean").rank("ordinal", descending=True).over("kind")
    return df.with_columns(kl_rank=rank.cast(pl.Int64)).sort("kind", "kl_rank")
