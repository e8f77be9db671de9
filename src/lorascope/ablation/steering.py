"""Steering sweep on LoRA components and SAE features (rule `steering_sweep`).

The paper's limitations section reports that steering needed > 50x normal
activation magnitudes before anything changed, and then mostly produced
backtracking ("Wait"). This module measures that: a target is one component
(its scalar shifted by alpha x its typical |activation|) or one SAE feature
(its decoder direction, at alpha x its typical activation, added to all
scalars). Per alpha it records backtracking-word rate and accuracy of greedy
generations on a benchmark, and the KL to the unsteered LoRA on training
sequences. Edits go through `lorascope.masked_lora.ScalarControl`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from lorascope.ablation import PrefixRunner
from lorascope.masked_lora import ScalarControl

__all__ = [
    "Target",
    "backtrack_stats",
    "choose_targets",
    "collect_scalars",
    "component_direction",
    "make_targets",
    "sae_direction",
    "sae_typical_activation",
    "steered",
    "steering_kl",
    "sweep",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What one sweep pushes: `delta_C` is the scalar shift at alpha = 1."""

    kind: str  # component | sae
    id: int  # component index or SAE latent
    label: str
    selection: str  # config | top_kl | sae_keyword | top_kl_fallback
    delta_C: np.ndarray


def component_direction(n_components: int, index: int, typical: float) -> np.ndarray:
    """Shift only component `index`, by its typical |activation|."""
    if not typical > 0:
        raise ValueError(f"component {index}: typical |activation| is {typical}")
    delta_C = np.zeros(n_components)
    delta_C[index] = typical
    return delta_C


@torch.no_grad()
def sae_typical_activation(sae, scalars_NC: torch.Tensor) -> np.ndarray:
    """Mean activation of each latent over the tokens where it fires (0 if never)."""
    acts_NF = sae.encode(scalars_NC.to(sae.W_dec.dtype).to(sae.W_dec.device))
    fired_NF = acts_NF > 0
    total_F = (acts_NF * fired_NF).sum(0)
    return (total_F / fired_NF.sum(0).clamp_min(1)).double().cpu().numpy()


@torch.no_grad()
def sae_direction(sae, latent: int, typical: float) -> np.ndarray:
    """Scalar shift that latent `latent` at activation `typical` decodes to.

    decode(typical * e_latent) - decode(0): the decoder direction in the space
    of raw LoRA scalars, with any output normalisation of the SAE applied.
    """
    if not typical > 0:
        raise ValueError(f"SAE latent {latent} never fires on the KL sequences")
    acts_2F = torch.zeros(
        2, sae.cfg.d_sae, dtype=sae.W_dec.dtype, device=sae.W_dec.device
    )
    acts_2F[1, latent] = typical
    out_2C = sae.decode(acts_2F)
    return (out_2C[1] - out_2C[0]).double().cpu().numpy()


def choose_targets(
    cfg: dict,
    kl_components: pl.DataFrame,
    sae_explanations: pl.DataFrame | None = None,
) -> list[tuple[str, int, str]]:
    """(kind, id, why) per target from the `steering:` config section.

    Explicit `components` / `sae_latents` win. Otherwise: the `top_kl`
    components by KL, plus up to `max_sae_features` SAE features whose
    explanation matches `explanation_keywords` (`sae_explanations` needs
    columns latent, explanation); when SAE features were wanted but none
    match, only top-KL components, marked `top_kl_fallback`.
    """
    if cfg["components"] or cfg["sae_latents"]:
        out = [("component", int(i), "config") for i in cfg["components"]]
        return out + [("sae", int(i), "config") for i in cfg["sae_latents"]]
    top = kl_components.sort("kl_mean", descending=True)["index"][: cfg["top_kl"]]
    matched: list[int] = []
    if sae_explanations is not None and cfg["max_sae_features"] > 0:
        words = "|".join(re.escape(w) for w in cfg["explanation_keywords"])
        hits = sae_explanations.filter(
            pl.col("explanation").fill_null("").str.contains(f"(?i){words}")
        )
        matched = hits["latent"].to_list()[: cfg["max_sae_features"]]
    wanted_sae = cfg["max_sae_features"] > 0
    why = "top_kl_fallback" if wanted_sae and not matched else "top_kl"
    if wanted_sae and not matched:
        log.warning(
            "no SAE explanation matches %s: steering top-KL components only",
            cfg["explanation_keywords"],
        )
    out = [("component", int(i), why) for i in top]
    return out + [("sae", int(latent), "sae_keyword") for latent in matched]


def make_targets(
    chosen: list[tuple[str, int, str]],
    kl_components: pl.DataFrame,
    sae=None,
    sae_typical_F: np.ndarray | None = None,
) -> list[Target]:
    """Targets with their directions; kl_components gives labels and typical |a|."""
    comps = kl_components.sort("index")
    n_components = comps.height
    out = []
    for kind, i, why in chosen:
        if kind == "component":
            if not 0 <= i < n_components:
                raise ValueError(f"steering.components: no component {i}")
            row = comps.row(i, named=True)
            label = f"L{row['layer']}.{row['module']}"
            if row["rank_slot"]:
                label += f".{row['rank_slot']}"
            delta_C = component_direction(n_components, i, row["mean_abs_act"])
        else:
            if sae is None or sae_typical_F is None:
                raise ValueError(f"SAE latent {i} chosen but no SAE was loaded")
            if not 0 <= i < sae.cfg.d_sae:
                raise ValueError(f"steering.sae_latents: no latent {i}")
            label = f"sae.{i}"
            delta_C = sae_direction(sae, i, sae_typical_F[i])
        out.append(Target(kind, i, label, why, delta_C))
    return out


@torch.no_grad()
def collect_scalars(
    runner: PrefixRunner, sequences: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Unsteered LoRA scalars of the scoped tokens of `sequences`, [N, C]."""
    device = next(runner.model.parameters()).device
    rows = [
        runner.reference(ids_T[None].to(device))[scope_T.to(device)]
        for ids_T, scope_T in sequences
    ]
    return torch.cat(rows).float().cpu()


def backtrack_stats(
    texts: list[str], n_tokens: list[int], words: list[str]
) -> dict[str, float]:
    """Backtracking words per 1000 generated tokens, and share of samples with any."""
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b")
    counts = [len(pattern.findall(t)) for t in texts]
    return {
        "backtrack_count": int(sum(counts)),
        "backtrack_per_1k_tokens": 1000.0 * sum(counts) / max(sum(n_tokens), 1),
        "backtrack_frac_samples": float(np.mean([c > 0 for c in counts])),
    }


class steered:
    """Context: every forward adds alpha x delta_C to the scalars (generation)."""

    def __init__(self, control: ScalarControl, delta_C: np.ndarray, alpha: float):
        self.control = control
        self.add_1C = torch.as_tensor(alpha * delta_C, dtype=torch.float32)[None]

    def __enter__(self) -> steered:
        self.control.clear()
        self.control.add_VC = self.add_1C
        return self

    def __exit__(self, *exc) -> None:
        self.control.clear()


@torch.no_grad()
def steering_kl(
    runner: PrefixRunner,
    sequences: list[tuple[torch.Tensor, torch.Tensor]],
    targets: list[Target],
    alphas: list[float],
    layer_C: np.ndarray,
    logit_chunk: int = 512,
) -> np.ndarray:
    """Token-weighted mean KL(unsteered || steered), [targets, alphas]."""
    device = next(runner.model.parameters()).device
    kl_GA = np.zeros((len(targets), len(alphas)))
    n_tokens = 0
    for ids_T, scope_T in sequences:
        scope_T = scope_T.to(device)
        runner.reference(ids_T[None].to(device))
        runner.ref_logp(logit_chunk)
        n = int(scope_T.sum())
        for g, target in enumerate(targets):
            # Nothing before the first shifted component's layer changes.
            start = int(layer_C[target.delta_C != 0].min())
            add_AC = torch.tensor(np.outer(alphas, target.delta_C), dtype=torch.float32)
            kl_A = runner.mean_kl(
                start, scope_T, add_VC=add_AC.to(device), logit_chunk=logit_chunk
            )
            kl_GA[g] += kl_A.cpu().numpy() * n
        n_tokens += n
    return kl_GA / max(n_tokens, 1)


def generation_metrics(
    model,
    tokenizer,
    control: ScalarControl,
    bench_rows: list[dict],
    add_C: np.ndarray,
    *,
    words: list[str],
    max_new_tokens: int,
    batch_size: int,
    system: str | None = None,
) -> dict[str, float]:
    """Greedy generations with `add_C` added to the scalars: accuracy, backtracking."""
    from lorascope.generate import build_prompts, generate_hf
    from lorascope.grading import grade

    prompts = build_prompts(tokenizer, [r["problem"] for r in bench_rows], system)
    with steered(control, add_C, 1.0):
        comps = generate_hf(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=False,
        )
    correct = [
        grade(row, c.text).correct for row, c in zip(bench_rows, comps, strict=True)
    ]
    texts, n_gen = [c.text for c in comps], [c.n_generated_tokens for c in comps]
    return {
        "accuracy": float(np.mean(correct)),
        "n_samples": len(comps),
        "mean_generated_tokens": float(np.mean(n_gen)),
        "truncated_frac": float(np.mean([c.truncated for c in comps])),
        **backtrack_stats(texts, n_gen, words),
    }


def sweep(
    model,
    tokenizer,
    control: ScalarControl,
    targets: list[Target],
    alphas: list[float],
    bench_rows: list[dict],
    sequences: list[tuple[torch.Tensor, torch.Tensor]],
    layer_C: np.ndarray,
    *,
    words: list[str],
    max_new_tokens: int,
    batch_size: int,
    logit_chunk: int = 512,
    system: str | None = None,
) -> pl.DataFrame:
    """steering/sweep.parquet: one row per target x alpha."""
    kl_GA = steering_kl(
        PrefixRunner(model, control), sequences, targets, alphas, layer_C, logit_chunk
    )
    gen = dict(
        words=words, max_new_tokens=max_new_tokens, batch_size=batch_size, system=system
    )
    # alpha = 0 adds nothing, so one unsteered generation serves every target.
    unsteered = None
    if 0 in alphas:
        zero_C = np.zeros(control.n_components)
        unsteered = generation_metrics(
            model, tokenizer, control, bench_rows, zero_C, **gen
        )
    rows = []
    for g, target in enumerate(targets):
        for a, alpha in enumerate(alphas):
            log.info("steering %s at alpha %s", target.label, alpha)
            metrics = (
                unsteered
                if alpha == 0
                else generation_metrics(
                    model, tokenizer, control, bench_rows, alpha * target.delta_C, **gen
                )
            )
            rows.append(
                {
                    "kind": target.kind,
                    "id": target.id,
                    "label": target.label,
                    "selection": target.selection,
                    "alpha": float(alpha),
                    "shift_norm": float(alpha * np.linalg.norm(target.delta_C)),
                    "kl_to_unsteered": float(kl_GA[g, a]),
                    **metrics,
                }
            )
    return pl.DataFrame(rows)
