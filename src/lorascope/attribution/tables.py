"""The attribution and validation tables (rule `feature_attribution`).

`attribution/features.parquet`: one row per feature (LoRA directions and SAE
features keyed like the feature tables) and target: `kind, feature, label,
component, latent, layer, module, target, effect, effect_lo, effect_hi,
support, rank, n_sequences, n_positions, frac_active`. `effect` is the
estimated change of the target when the feature is removed (mean over the
sequences that have the target, percentile bootstrap interval over those
sequences); `support` is how much the feature pushes the target's way
(-effect for log-prob targets, +effect for the loss: removing a feature the
fit relies on raises it); `rank` 1 = largest support within kind and target.
A LoRA direction takes its component's numbers (removing it zeroes the
scalar, both signs), as in `ablation/feature_kl.parquet`.

`attribution/exact.parquet`: `kind (lora|sae), unit (component | latent),
target, estimate, exact, n_sequences` on the validation sequences
(`validation_sequences`: those with the most targets first, so every target
is validated where the attribution sequences allow);
`attribution/validation.parquet`: per kind and target, Spearman rho between
estimate and exact over the units that move (bootstrap interval over
units), Pearson r, the share of same signs, the median relative error and
`trustworthy` = the interval's lower end >= `attribution.trust_rho`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.attribution.exact import ExactEffects
from lorascope.attribution.gradients import Attribution

__all__ = [
    "attribution_table",
    "validation_sequences",
    "bootstrap_mean",
    "exact_frame",
    "rank_correlation",
    "validation_table",
]

KEYS = ["kind", "feature", "label", "component", "latent", "layer", "module"]


def support_sign(target: str) -> float:
    """+1 where a larger target is what the feature supports (log-probs),
    -1 for the loss."""
    return -1.0 if target == "loss" else 1.0


def bootstrap_mean(
    x_SU: np.ndarray, n_boot: int, seed: int, ci: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over rows (sequences) per column, and a percentile bootstrap
    interval over rows (resampling weights, one draw shared by all columns)."""
    n = len(x_SU)
    if n == 0:
        nan = np.full(x_SU.shape[1], np.nan)
        return nan, nan, nan
    rng = np.random.default_rng(seed)
    w_BS = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    boot_BU = w_BS @ x_SU / n
    lo, hi = np.percentile(boot_BU, [50 * (1 - ci), 50 * (1 + ci)], axis=0)
    return x_SU.mean(0), lo, hi


def _keys(features: pl.DataFrame, kind: str) -> pl.DataFrame:
    cols = {
        "kind": pl.lit(kind),
        "feature": pl.col("feature").cast(pl.Int64),
        "label": pl.col("label"),
    }
    for name, dtype in (("component", pl.Int64), ("latent", pl.Int64),
                        ("layer", pl.Int64), ("module", pl.Utf8)):  # fmt: skip
        have = name in features.columns
        cols[name] = pl.col(name).cast(dtype) if have else pl.lit(None, dtype)
    return features.select(**cols)


def attribution_table(
    lora_features: pl.DataFrame,
    sae_features: pl.DataFrame,
    att: Attribution,
    *,
    n_boot: int,
    seed: int,
    ci: float = 0.95,
) -> pl.DataFrame:
    """Every LoRA direction and SAE feature x target (module docstring)."""
    parts = []
    comp = lora_features["component"].to_numpy()
    latent = sae_features["latent"].to_numpy()
    lora_active = lora_features["frac_active"].cast(pl.Float64).to_numpy()
    for k, target in enumerate(att.targets):
        has_S = att.positions_KS[k] > 0
        sign = support_sign(target)
        for kind, feats, x_SU, units, active in (
            ("lora", lora_features, att.lora_KSC[k][has_S], comp, lora_active),
            ("sae", sae_features, att.sae_KSF[k][has_S], latent,
             att.frac_active_F[latent]),
        ):  # fmt: skip
            mean, lo, hi = bootstrap_mean(x_SU[:, units], n_boot, seed, ci)
            parts.append(
                _keys(feats, kind).with_columns(
                    target=pl.lit(target),
                    effect=pl.Series(mean, dtype=pl.Float64),
                    effect_lo=pl.Series(lo, dtype=pl.Float64),
                    effect_hi=pl.Series(hi, dtype=pl.Float64),
                    support=pl.Series(-sign * mean, dtype=pl.Float64),
                    n_sequences=pl.lit(int(has_S.sum())),
                    n_positions=pl.lit(int(att.positions_KS[k].sum())),
                    frac_active=pl.Series(np.asarray(active, dtype=np.float64)),
                )
            )
    df = pl.concat(parts)
    rank = pl.col("support").rank("ordinal", descending=True).over("kind", "target")
    return df.with_columns(rank=rank.cast(pl.Int64)).sort("target", "kind", "rank")


def exact_frame(
    att: Attribution,
    exact: ExactEffects,
    latents: np.ndarray,
    seq_index: np.ndarray | None = None,
) -> pl.DataFrame:
    """Estimate and exact effect per unit and target, averaged over the
    validation sequences that have the target. `seq_index`: which of the
    attribution's sequences the exact effects were measured on, in their
    order (None: the first ones)."""
    n_val = exact.lora_KSC.shape[1]
    idx = np.arange(n_val) if seq_index is None else np.asarray(seq_index)
    rows = []
    for k, target in enumerate(att.targets):
        has_S = att.positions_KS[k, idx] > 0
        for kind, est_SU, ex_SU, units in (
            ("lora", att.lora_KSC[k, idx], exact.lora_KSC[k],
             np.arange(exact.lora_KSC.shape[2])),
            ("sae", att.sae_KSF[k, idx], exact.sae_KSF[k], latents),
        ):  # fmt: skip
            if not has_S.any():
                continue
            est = est_SU[has_S][:, units].mean(0)
            ex = ex_SU[has_S][:, units].mean(0)
            rows.append(
                pl.DataFrame(
                    {
                        "kind": kind,
                        "unit": units.astype(np.int64),
                        "target": target,
                        "estimate": est,
                        "exact": ex,
                        "n_sequences": int(has_S.sum()),
                    }
                )
            )
    schema = {"kind": pl.Utf8, "unit": pl.Int64, "target": pl.Utf8,
              "estimate": pl.Float64, "exact": pl.Float64,
              "n_sequences": pl.Int64}  # fmt: skip
    return pl.concat(rows) if rows else pl.DataFrame(schema=schema)


def validation_sequences(att: Attribution, n: int) -> np.ndarray:
    """The `n` attribution sequences exact removal is measured on: those
    with positions for the most targets first, then in draw order."""
    present_S = (att.positions_KS > 0).sum(0)
    order = sorted(range(len(present_S)), key=lambda s: (-present_S[s], s))
    return np.array(order[:n], dtype=np.int64)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman needs."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def rank_correlation(
    x: np.ndarray, y: np.ndarray, n_boot: int, seed: int, ci: float = 0.95
) -> tuple[float, float, float]:
    """Spearman rho and a percentile bootstrap interval over pairs."""
    if len(x) < 3:
        return float("nan"), float("nan"), float("nan")
    rho = _pearson(_ranks(x), _ranks(y))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        r = _pearson(_ranks(x[i]), _ranks(y[i]))
        if np.isfinite(r):
            boots.append(r)
    if not boots:
        return rho, float("nan"), float("nan")
    lo, hi = np.percentile(boots, [50 * (1 - ci), 50 * (1 + ci)])
    return rho, float(lo), float(hi)


def validation_table(
    exact: pl.DataFrame, *, n_boot: int, seed: int, trust_rho: float
) -> pl.DataFrame:
    """Per kind and target: how well the estimates rank and size the exact
    effects, over the units whose exact or estimated effect is not 0 (a
    latent that never fires is 0 in both and would only add ties)."""
    rows = []
    for (kind, target), part in exact.group_by("kind", "target", maintain_order=True):
        moving = part.filter((pl.col("exact") != 0) | (pl.col("estimate") != 0))
        x, y = moving["estimate"].to_numpy(), moving["exact"].to_numpy()
        rho, lo, hi = rank_correlation(x, y, n_boot, seed)
        big = np.abs(y) > 1e-12
        rel = np.abs(x[big] - y[big]) / np.abs(y[big])
        rows.append(
            {
                "kind": kind,
                "target": target,
                "n_units": len(moving),
                "n_sequences": int(part["n_sequences"][0]),
                "rho": rho,
                "rho_lo": lo,
                "rho_hi": hi,
                "pearson": _pearson(x, y) if len(x) >= 3 else float("nan"),
                "sign_agreement": float(np.mean(np.sign(x[big]) == np.sign(y[big])))
                if big.any()
                else float("nan"),
                "rel_error_median": float(np.median(rel))
                if big.any()
                else float("nan"),
                "trustworthy": bool(np.isfinite(lo) and lo >= trust_rho),
            }
        )
    return pl.DataFrame(rows)
