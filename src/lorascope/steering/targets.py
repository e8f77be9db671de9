"""What the steering sweep pushes (rule `steering_sweep`): targets and their
scalar shifts.

A target is one LoRA component (its scalar shifted by its typical
|activation|), one SAE feature (its decoder direction at its typical
activation, spread over every scalar) or, with `steering.residual`, a
component's lora_A direction in the residual stream (`residual` set, no
scalar shift; lorascope.steering.residual). `choose_targets` reads
the `steering:` config section; `make_targets` turns the choice into shift
vectors.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from lorascope.core.components import component_label, table_rank

__all__ = [
    "Target",
    "choose_targets",
    "component_direction",
    "make_targets",
    "sae_direction",
    "sae_typical_activation",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """What one sweep pushes: `delta_C` is the scalar shift at alpha = 1."""

    kind: str  # component | sae | residual
    id: int  # component index (component, residual) or SAE latent
    label: str
    selection: str  # config | top_kl | sae_keyword(_kl) | sae_top_kl | top_kl_fallback
    delta_C: np.ndarray
    residual: Any = None  # residual_steering.ResidualSpec for kind residual


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
    sae_kl: pl.DataFrame | None = None,
) -> list[tuple[str, int, str]]:
    """(kind, id, why) per target from the `steering:` config section.

    Explicit `components` / `sae_latents` win. Otherwise: the `top_kl`
    components by KL, plus up to `max_sae_features` SAE features picked by
    `sae_select`: `keyword` (explanation matches `explanation_keywords`, in
    feature order; `sae_explanations` needs columns latent, explanation),
    `keyword_by_kl` (those matches, largest feature-ablation KL first) or
    `top_kl` (largest feature-ablation KL, explanation ignored); `sae_kl`
    needs columns latent, kl_mean (ablation/feature_kl.parquet, kind sae).
    When SAE features were wanted but none match, only top-KL components,
    marked `top_kl_fallback`.
    """
    if cfg["components"] or cfg["sae_latents"]:
        out = [("component", int(i), "config") for i in cfg["components"]]
        return out + [("sae", int(i), "config") for i in cfg["sae_latents"]]
    top = kl_components.sort("kl_mean", descending=True)["index"][: cfg["top_kl"]]
    select = cfg["sae_select"]
    wanted_sae = cfg["max_sae_features"] > 0
    if wanted_sae and select != "keyword" and sae_kl is None:
        raise ValueError(f"steering.sae_select {select!r} needs the feature KL table")
    matched: list[int] = []
    if wanted_sae and select == "top_kl":
        ranked = sae_kl.sort("kl_mean", descending=True, maintain_order=True)
        matched = ranked["latent"].to_list()[: cfg["max_sae_features"]]
    elif wanted_sae and sae_explanations is not None:
        words = "|".join(re.escape(w) for w in cfg["explanation_keywords"])
        hits = sae_explanations.filter(
            pl.col("explanation").fill_null("").str.contains(f"(?i){words}")
        )
        if select == "keyword_by_kl":
            hits = hits.join(sae_kl.select("latent", "kl_mean"), on="latent")
            hits = hits.sort("kl_mean", descending=True, maintain_order=True)
        matched = hits["latent"].to_list()[: cfg["max_sae_features"]]
    why = "top_kl_fallback" if wanted_sae and not matched else "top_kl"
    if wanted_sae and not matched:
        log.warning(
            "no SAE explanation matches %s: steering top-KL components only",
            cfg["explanation_keywords"],
        )
    sae_why = {"keyword": "sae_keyword", "keyword_by_kl": "sae_keyword_kl"}
    sae_why["top_kl"] = "sae_top_kl"
    out = [("component", int(i), why) for i in top]
    return out + [("sae", int(latent), sae_why[select]) for latent in matched]


def make_targets(
    chosen: list[tuple[str, int, str]],
    kl_components: pl.DataFrame,
    sae=None,
    sae_typical_F: np.ndarray | None = None,
) -> list[Target]:
    """Targets with their directions; kl_components gives labels and typical |a|."""
    comps = kl_components.sort("index")
    n_components, rank = comps.height, table_rank(comps)
    out = []
    for kind, i, why in chosen:
        if kind == "component":
            if not 0 <= i < n_components:
                raise ValueError(f"steering.components: no component {i}")
            row = comps.row(i, named=True)
            # L3.gate, or L3.gate#1 for direction 1 of a rank > 1 adapter (the
            # label extraction, features and ablation tables give it)
            label = component_label(row["layer"], row["module"], row["rank_slot"], rank)
            delta_C = component_direction(n_components, i, row["mean_abs_act"])
        else:
            if sae is None or sae_typical_F is None:
                raise ValueError(f"SAE latent {i} chosen but no SAE was loaded")
            if not 0 <= i < sae.cfg.d_sae:
                raise ValueError(f"steering.sae_latents: no latent {i}")
            if why != "config" and not sae_typical_F[i] > 0:
                # picked automatically (by explanation or feature KL), but
                # silent on the KL sequences: no typical activation to steer
                # by (a latent named in the config still fails, in
                # sae_direction)
                log.warning(
                    "SAE latent %d (%s) never fires on the KL sequences: not steered",
                    i,
                    why,
                )
                continue
            label = f"sae.{i}"
            delta_C = sae_direction(sae, i, sae_typical_F[i])
        out.append(Target(kind, i, label, why, delta_C))
    return out
