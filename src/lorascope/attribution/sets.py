"""Behaviour sets: are the top features for a target necessary and sufficient
for the behaviour during generation? (rule `behaviour_sets`)

Per target in `attribution.set_targets`, the set is the `set_size` SAE
features with the largest attribution support among the features that fire
on the attribution sequences (`attribution/features.parquet`). Greedy
generations of a benchmark (HF backend), each with the causal stage's
two-pass decoder hook (`lorascope.causal.feature_accuracy.CleanScalars`: the
unedited LoRA runs first on every step and gives the scalars the SAE
encodes):

- `full` (the LoRA), `floor` (the scalars replaced by their SAE
  reconstruction), `base` (every scalar 0: the base model): references;
- necessity: the reconstruction minus the set's part (sum over the set of
  z_f dir_f), against `floor`;
- sufficiency: only the set's part (its decoder directions times the codes
  the full LoRA gives; no decoder bias, no other LoRA change), against
  `base`;
- the same for `random_sets` sets of the same size drawn from the features
  that fire: the chance level.

`attribution/sets.parquet`, one row per generation and metric: `target,
set, test (reference|necessity|sufficiency), reference, metric (accuracy |
backtrack_per_1k_tokens | backtrack_frac_samples | mean_generated_tokens),
value, delta, delta_lo, delta_hi, n, latents`; the top sets' rows add
`random_mean, random_min, random_max` (the random sets' deltas),
`vs_random, vs_random_lo, vs_random_hi` (delta minus the random sets' mean
delta) and `random_below` (share of random sets whose delta is below the
top set's). Intervals: paired percentile bootstrap over problems (one
resample for every generation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from lorascope.ablation.generation import backtrack_stats, graded_generations
from lorascope.ablation.scalar_control import ScalarControl
from lorascope.attribution.checks import firing_problem
from lorascope.causal.feature_accuracy import CleanScalars, sae_edit
from lorascope.causal.feature_kl import SaeMap

__all__ = [
    "FeatureSet",
    "choose_sets",
    "run_sets",
    "set_edit",
    "sets_table",
]

METRICS = [
    "accuracy",
    "backtrack_per_1k_tokens",
    "backtrack_frac_samples",
    "mean_generated_tokens",
]


@dataclass(frozen=True)
class FeatureSet:
    """One generation: `test` reference|necessity|sufficiency, `name` top,
    random-<i> or a reference's name (full, floor, base)."""

    target: str
    name: str
    test: str
    latents: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.target}:{self.name}:{self.test}"

    @property
    def reference(self) -> str:
        if self.test == "reference":
            return {"full": "base", "floor": "full", "base": "base"}[self.name]
        return {"necessity": "floor", "sufficiency": "base"}[self.test]


def firing_latents(attribution: pl.DataFrame) -> np.ndarray:
    """SAE latents that fire on the attribution sequences (sorted)."""
    sae = attribution.filter((pl.col("kind") == "sae") & (pl.col("frac_active") > 0))
    return np.unique(sae["latent"].to_numpy())


def choose_sets(
    attribution: pl.DataFrame,
    targets: list[str],
    size: int,
    n_random: int,
    seed: int,
    where: str = "attribution/features.parquet",
) -> list[FeatureSet]:
    """References, then per target the top set and `n_random` random sets of
    features that fire, each tested for necessity and sufficiency."""
    firing = firing_latents(attribution)
    problem = firing_problem(size, len(firing), where)
    if problem:
        raise ValueError(problem)
    out = [FeatureSet("-", name, "reference") for name in ("full", "floor", "base")]
    rng = np.random.default_rng(seed)
    for target in targets:
        rows = attribution.filter(
            (pl.col("kind") == "sae") & (pl.col("target") == target)
            & pl.col("latent").is_in(firing.tolist())
        )  # fmt: skip
        if rows.is_empty():
            raise ValueError(
                f"attribution.set_targets: {target!r} has no attribution rows "
                f"(is it in attribution.targets? does any sequence have it?)"
            )
        top = rows.sort("support", descending=True).head(size)["latent"].to_list()
        sets = [("top", tuple(int(x) for x in top))]
        for i in range(n_random):
            draw = rng.choice(firing, size, replace=False)
            sets.append((f"random-{i}", tuple(int(x) for x in np.sort(draw))))
        for name, latents in sets:
            for test in ("necessity", "sufficiency"):
                out.append(FeatureSet(target, name, test, latents))
    return out


def set_edit(
    sae_map: SaeMap, latents: tuple[int, ...], keep_rest: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """scalars -> reconstruction minus the set's part (`keep_rest`,
    necessity) or the set's part alone (sufficiency)."""
    idx = torch.as_tensor(list(latents), dtype=torch.long)

    def edit(scalars_BTC: torch.Tensor) -> torch.Tensor:
        b, t, c = scalars_BTC.shape
        z_NF, recon_NC = sae_map.codes(scalars_BTC.reshape(b * t, c))
        part_NC = z_NF[:, idx] @ sae_map.dir_FC[idx]
        out_NC = recon_NC - part_NC if keep_rest else part_NC
        return out_NC.reshape(b, t, c).to(scalars_BTC)

    return edit


def run_sets(
    model,
    tokenizer,
    control: ScalarControl,
    sae_map: SaeMap,
    sets: list[FeatureSet],
    bench_rows: list[dict],
    *,
    words: list[str],
    **gen,
) -> dict[str, dict[str, np.ndarray]]:
    """Per set: per-problem `correct`, `tokens`, `backtracks`."""
    out = {}
    for fs in sets:
        control.clear()
        try:
            if fs.name == "base":
                control.mult_VC = torch.zeros(1, control.n_components)
            if fs.name in ("full", "base"):
                ok, comps = graded_generations(model, tokenizer, bench_rows, **gen)
            else:
                edit = (
                    sae_edit(sae_map, None)
                    if fs.name == "floor"
                    else set_edit(sae_map, fs.latents, fs.test == "necessity")
                )
                with CleanScalars(model, control, edit):
                    ok, comps = graded_generations(model, tokenizer, bench_rows, **gen)
        finally:
            control.clear()
        tokens = np.array([c.n_generated_tokens for c in comps], dtype=float)
        counts = [
            backtrack_stats([c.text], [c.n_generated_tokens], words)["backtrack_count"]
            for c in comps
        ]
        out[fs.key] = {
            "correct": ok.astype(float),
            "tokens": tokens,
            "backtracks": np.array(counts, dtype=float),
        }
    return out


def _metrics(run: dict[str, np.ndarray], idx_BN: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric on each resample of problems [B]."""
    tok_BN, bt_BN = run["tokens"][idx_BN], run["backtracks"][idx_BN]
    return {
        "accuracy": run["correct"][idx_BN].mean(-1),
        "backtrack_per_1k_tokens": 1000 * bt_BN.sum(-1) / np.maximum(tok_BN.sum(-1), 1),
        "backtrack_frac_samples": (bt_BN > 0).mean(-1),
        "mean_generated_tokens": tok_BN.mean(-1),
    }


def sets_table(
    sets: list[FeatureSet],
    runs: dict[str, dict[str, np.ndarray]],
    *,
    n_boot: int,
    seed: int,
    ci: float = 0.95,
) -> pl.DataFrame:
    """The table of the module docstring."""
    n = len(next(iter(runs.values()))["correct"])
    if n == 0:
        raise ValueError("behaviour_sets: no graded problems")
    rng = np.random.default_rng(seed)
    idx_BN = np.vstack([np.arange(n)[None], rng.integers(0, n, size=(n_boot, n))])
    stats = {k: _metrics(run, idx_BN) for k, run in runs.items()}  # row 0 = observed
    ref_key = {
        name: FeatureSet("-", name, "reference").key
        for name in ("full", "floor", "base")
    }
    q = [50 * (1 - ci), 50 * (1 + ci)]

    def delta(fs: FeatureSet, metric: str) -> np.ndarray:
        return stats[fs.key][metric] - stats[ref_key[fs.reference]][metric]

    rows = []
    for fs in sets:
        for metric in METRICS:
            d = delta(fs, metric)
            lo, hi = np.percentile(d[1:], q)
            row = {
                "target": fs.target, "set": fs.name, "test": fs.test,
                "reference": fs.reference, "metric": metric,
                "value": float(stats[fs.key][metric][0]), "delta": float(d[0]),
                "delta_lo": float(lo), "delta_hi": float(hi), "n": n,
                "latents": list(fs.latents),
            }  # fmt: skip
            randoms = [
                r for r in sets if r.name.startswith("random-")
                and (r.target, r.test) == (fs.target, fs.test)
            ]  # fmt: skip
            if fs.name == "top" and randoms:
                rd = np.stack([delta(r, metric) for r in randoms])  # [R, 1 + B]
                vs = d - rd.mean(0)
                vs_lo, vs_hi = np.percentile(vs[1:], q)
                row |= {
                    "random_mean": float(rd[:, 0].mean()),
                    "random_min": float(rd[:, 0].min()),
                    "random_max": float(rd[:, 0].max()),
                    "vs_random": float(vs[0]),
                    "vs_random_lo": float(vs_lo),
                    "vs_random_hi": float(vs_hi),
                    "random_below": float((rd[:, 0] < d[0]).mean()),
                }
            rows.append(row)
    extra = ["random_mean", "random_min", "random_max", "vs_random"]
    extra += ["vs_random_lo", "vs_random_hi", "random_below"]
    schema = {k: pl.Float64 for k in extra} | {"latents": pl.List(pl.Int64)}
    return pl.DataFrame(rows, schema_overrides=schema, infer_schema_length=None)
