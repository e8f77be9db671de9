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

`ablation/sae_recovered.json` (`sae_recovered`): the SAE's reconstruction
scored by what replacing the scalars with it costs the model, as SAELens and
the SAE literature score a reconstruction spliced into the forward (CE loss
recovered), with "zero ablation" = every LoRA scalar set to 0 (the LoRA's
contribution removed; the base model's own weights stay):

- kl_recovered = 1 - KL(full || recon) / KL(full || zero);
- loss_recovered = (L_zero - L_recon) / (L_zero - L_full), L the mean
  next-token loss on the loss-labelled tokens of the same sequences.

Both are 1 for an exact reconstruction and 0 for one no better than zeroing
the scalars (below 0: worse than that). KL and loss are averaged over
sequences as `ablation.average` says (tokens: pooled; sequences: mean of the
per-sequence means). A denominator of 0 (zeroing the scalars changes
nothing) leaves the fraction null, with the reason under `undefined`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.causal.feature_kl import FeatureKL

__all__ = ["feature_kl_table", "lora_rows", "sae_recovered", "sae_rows"]

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


def _mean(value_S: np.ndarray, tokens_S: np.ndarray, average: str) -> float:
    """One number from per-sequence means, as `ablation.average` says;
    sequences without a counted token take no part."""
    has_S = tokens_S > 0
    if not has_S.any():
        return float("nan")
    return float(_average(value_S[None, has_S], tokens_S[has_S], average)["kl_mean"][0])


def sae_recovered(out: FeatureKL, average: str) -> dict:
    """KL and loss recovered by the reconstruction (module docstring)."""
    rep = out.replacement
    if rep is None:
        raise ValueError("sae_recovered: the feature ablation ran without its zero run")
    kl_recon = _mean(out.floor_S, out.tokens_S, average)
    kl_zero = _mean(rep.kl_zero_S, out.tokens_S, average)
    loss = {
        k: _mean(v, rep.loss_tokens_S, average)
        for k, v in (("full", rep.loss_full_S), ("recon", rep.loss_floor_S),
                     ("zero", rep.loss_zero_S))
    }  # fmt: skip
    undefined = {}
    kl_rec = loss_rec = None
    if not np.isfinite(kl_zero) or kl_zero <= 0:
        undefined["kl_recovered"] = (
            f"KL(full || zero) = {kl_zero:.3g}: zeroing the scalars changes nothing"
            if np.isfinite(kl_zero)
            else "no token in the KL scope"
        )
    else:
        kl_rec = 1.0 - kl_recon / kl_zero
    gap = loss["zero"] - loss["full"]
    if not np.isfinite(gap) or gap == 0:
        undefined["loss_recovered"] = (
            "L_zero = L_full: zeroing the scalars leaves the loss unchanged"
            if np.isfinite(gap)
            else "no loss-labelled token in the sequences"
        )
    else:
        loss_rec = (loss["zero"] - loss["recon"]) / gap

    def num(x: float) -> float | None:  # JSON has no NaN
        return float(x) if np.isfinite(x) else None

    return {
        "kl_recovered": kl_rec,
        "loss_recovered": loss_rec,
        "kl_full_recon": num(kl_recon),
        "kl_full_zero": num(kl_zero),
        "loss_full": num(loss["full"]),
        "loss_recon": num(loss["recon"]),
        "loss_zero": num(loss["zero"]),
        "average": average,
        "n_sequences": len(out.tokens_S),
        "n_kl_tokens": int(out.tokens_S.sum()),
        "n_loss_tokens": int(rep.loss_tokens_S.sum()),
        "undefined": undefined,
        "definition": {
            "kl_recovered": "1 - KL(full || recon) / KL(full || zero)",
            "loss_recovered": "(L_zero - L_recon) / (L_zero - L_full)",
            "zero": "every LoRA scalar set to 0",
            "recon": "every LoRA scalar replaced by the SAE reconstruction",
        },
    }
