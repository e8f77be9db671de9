"""SAE architectures compared on the embedded world, two seeds each
(rule `sae_architectures`, one job: several tiny SAEs).

For each architecture of `groundtruth.sae_architectures` and two seeds
(`sae.seed` and the next), an SAE of the `sae:` section with that
architecture is trained on the training documents of the activation shards
(`lorascope.sae.split`), saved and reloaded as rule `train_sae` does, and
measured:

- held out: FVU, mean L0 and dead fraction on the held-out documents;
- stability: the two seeds' decoder directions matched one to one
  (Hungarian on |cosine|), mean matched |cosine| over all latents and over
  the latents alive in both;
- ground truth: its alive latents scored against the token roles of the SFT
  documents of `groundtruth/tokens.parquet` (`lorascope.groundtruth.metrics`):
  matched best F1 and AUROC, averaged over the roles.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile

import numpy as np
import polars as pl
import torch
from scipy.optimize import linear_sum_assignment

from lorascope.core.saes import load_sae
from lorascope.groundtruth.metrics import match_roles, role_scores
from lorascope.sae.config import SaeConfig
from lorascope.sae.evaluation import evaluate_sae
from lorascope.sae.split import split_views
from lorascope.sae.training import save_sae, train_sae, training_batches
from lorascope.toy.roles import ROLES

log = logging.getLogger(__name__)

__all__ = ["compare_architectures", "matched_decoder_cosine", "role_inputs"]


def matched_decoder_cosine(
    a_FC: torch.Tensor, b_FC: torch.Tensor, alive_a=None, alive_b=None
) -> tuple[float, float]:
    """(mean matched |cos| over all latents, over latents alive in both)."""
    a = torch.nn.functional.normalize(a_FC.double(), dim=1)
    b = torch.nn.functional.normalize(b_FC.double(), dim=1)
    cos = (a @ b.T).abs().cpu().numpy()
    rows, cols = linear_sum_assignment(-cos)
    matched = cos[rows, cols]
    both = np.ones(len(rows), bool)
    if alive_a is not None and alive_b is not None:
        both = np.isin(rows, alive_a) & np.isin(cols, alive_b)
    return float(matched.mean()), float(matched[both].mean()) if both.any() else np.nan


def role_inputs(shards, tokens: pl.DataFrame) -> tuple[torch.Tensor, np.ndarray]:
    """(LoRA scalars [T, C], roles [T, R]) of the scored SFT tokens of
    groundtruth/tokens.parquet, read from the shards by (doc, pos)."""
    sft = tokens.filter((pl.col("source") == "sft") & pl.col("scored"))
    sft = sft.with_columns(pl.col("doc").cast(pl.Int64))
    acts, roles = [], []
    for doc, cols in shards.iter_docs(sft["doc"].unique().sort().to_list()):
        rows = sft.filter(pl.col("doc") == doc)
        # A copy: polars hands out a read-only view, which torch warns about.
        pos = torch.tensor(rows["pos"].to_numpy(), dtype=torch.long)
        at = torch.searchsorted(cols["pos"].long(), pos)
        if (at >= len(cols["pos"])).any() or (
            cols["pos"][at.clamp_max(len(cols["pos"]) - 1)] != pos
        ).any():
            raise ValueError(
                f"groundtruth/tokens.parquet doc {doc}: positions not in the shards"
            )
        acts.append(cols["acts"][at].float())
        roles.append(rows.select(ROLES).to_numpy())
    return torch.cat(acts), np.concatenate(roles).astype(bool)


def _one(cfg: SaeConfig, shards, gt_acts, gt_roles) -> dict:
    train, held = split_views(shards, cfg.heldout_every)
    result = train_sae(
        cfg, training_batches(train, cfg), shards.n_components, train.n_tokens
    )
    with tempfile.TemporaryDirectory() as tmp:
        save_sae(result.sae, f"{tmp}/sae")
        sae = load_sae(f"{tmp}/sae", device="cpu")
    fit = evaluate_sae(sae, train.iter_batches(cfg.batch_size), cfg.dead_frac_threshold)
    row = {"alive": fit["alive_latents"], "W_dec": sae.W_dec.detach().cpu()}
    if held is not None:
        h = evaluate_sae(
            sae, held.iter_batches(cfg.batch_size), cfg.dead_frac_threshold
        )
        row |= {
            "heldout_fvu": h["fvu"],
            "heldout_l0": h["mean_l0"],
            "heldout_dead_fraction": h["dead_fraction"],
            "heldout_tokens": h["n_tokens"],
        }
    row |= {"train_fvu": fit["fvu"], "train_dead_fraction": fit["dead_fraction"]}
    with torch.no_grad():
        codes = sae.encode(gt_acts).cpu().numpy()[:, fit["alive_latents"]]
    auc, f1, _ = role_scores(codes, gt_roles)
    pairs = match_roles(f1, list(ROLES))
    idx = [(ROLES.index(r), f) for r, f in pairs]
    row["gt_matched_f1"] = float(np.mean([f1[f, r] for r, f in idx])) if idx else np.nan
    row["gt_matched_auroc"] = (
        float(np.mean([auc[f, r] for r, f in idx])) if idx else np.nan
    )
    return row


def compare_architectures(
    cfg: SaeConfig, architectures: list[str], shards, tokens: pl.DataFrame
) -> pl.DataFrame:
    """One row per (architecture, seed); see the module docstring."""
    gt_acts, gt_roles = role_inputs(shards, tokens)
    rows = []
    for arch in architectures:
        runs = []
        for seed in (cfg.seed, cfg.seed + 1):
            one = dataclasses.replace(cfg, architecture=arch, seed=seed)
            torch.manual_seed(seed)
            log.info("%s, seed %d", arch, seed)
            runs.append(_one(one, shards, gt_acts, gt_roles))
        cos_all, cos_alive = matched_decoder_cosine(
            runs[0]["W_dec"], runs[1]["W_dec"], runs[0]["alive"], runs[1]["alive"]
        )
        for seed, run in zip((cfg.seed, cfg.seed + 1), runs, strict=True):
            run.pop("W_dec")
            alive = run.pop("alive")
            rows.append(
                {"architecture": arch, "seed": seed, "alive": len(alive), **run}
                | {"decoder_cos_matched": cos_all, "decoder_cos_alive": cos_alive}
            )
    return pl.DataFrame(rows)
