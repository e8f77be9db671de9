"""Cross-layer SAE on the full vector of LoRA scalars (paper §3.1: BatchTopK).

Used by the `train_sae` rule (workflow/rules/sae.smk). Training is the SAELens
training SAE of `sae.architecture` (built by `lorascope.sae.architectures`)
driven by its `SAETrainer`, fed by our own iterator of `[batch, components]`
tensors streamed from the activation shards. The model is saved with
`save_inference_model` (for BatchTopK a JumpReLU SAE whose global threshold is
the one BatchTopK learned), so `sae_lens.SAE.load_from_disk` reads it back and
every later stage encodes with the saved model, not the training one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes.sae import TrainingSAE, TrainStepOutput
from sae_lens.training.sae_trainer import SAETrainer

from lorascope.core.io import atomic_path
from lorascope.core.runtime import resolve_device
from lorascope.core.saes import load_sae
from lorascope.sae.architectures import training_sae_config, uses_k
from lorascope.sae.config import SaeConfig
from lorascope.sae.evaluation import evaluate_sae
from lorascope.sae.split import split_views

__all__ = [
    "TrainResult",
    "save_sae",
    "shuffled_batches",
    "train_on_shards",
    "train_sae",
    "trainer_config",
    "training_batches",
]

# Batches SAELens reads to estimate a normalisation (scale or whitening) before
# training; only used when `normalize` is not "none".
NORM_ESTIMATE_BATCHES = 64


def shuffled_batches(
    make_epoch: Callable[[int], Iterable[torch.Tensor]],
    batch_size: int,
    buffer_rows: int = 0,
    seed: int = 0,
) -> Iterator[torch.Tensor]:
    """Endless stream of float32 `[batch_size, C]` batches, epoch after epoch.

    `make_epoch(e)` yields row chunks of any size for epoch e (shuffled shard
    batches seeded by e). A shuffle buffer of `buffer_rows` rows mixes tokens
    across chunks (shards hold whole documents, so one shard's rows alone are
    correlated): once full it is permuted, the oldest half is served and the
    rest kept. Leftover rows carry over, so every batch is full: SAETrainer
    counts `train_batch_size_samples` per step and BatchTopK keeps k x rows.
    """
    gen = torch.Generator().manual_seed(seed)
    keep = buffer_rows // 2 if buffer_rows > batch_size else 0
    pending: list[torch.Tensor] = []
    n_pending = 0
    epoch = 0
    while True:
        n_rows_epoch = 0
        for chunk_NC in make_epoch(epoch):
            chunk_NC = chunk_NC.to(torch.float32)
            n_rows_epoch += chunk_NC.shape[0]
            pending.append(chunk_NC)
            n_pending += chunk_NC.shape[0]
            if n_pending < max(buffer_rows, batch_size):
                continue
            rows_NC = torch.cat(pending)
            if buffer_rows > batch_size:
                rows_NC = rows_NC[torch.randperm(rows_NC.shape[0], generator=gen)]
            n_serve = (rows_NC.shape[0] - keep) // batch_size * batch_size
            yield from rows_NC[:n_serve].split(batch_size)
            pending = [rows_NC[n_serve:]]
            n_pending = pending[0].shape[0]
        if n_rows_epoch == 0:
            raise ValueError(f"the activation data yielded no rows in epoch {epoch}")
        epoch += 1


def training_batches(shards: Any, cfg: SaeConfig) -> Iterator[torch.Tensor]:
    """Endless shuffled training batches from a `lorascope.core.shards.ShardSet`.

    Holds one shard plus the shuffle buffer in memory, never every shard.
    """

    def epoch(e: int) -> Iterator[torch.Tensor]:
        return shards.iter_batches(
            cfg.batch_size, shuffle=True, seed=cfg.seed * 100_003 + e
        )

    return shuffled_batches(epoch, cfg.batch_size, cfg.shuffle_buffer_tokens, cfg.seed)


@dataclass
class TrainResult:
    sae: TrainingSAE
    curve: list[dict[str, float]] = field(default_factory=list)
    """One point per `log_every` steps: step, samples, loss terms, l0, fvu."""
    n_steps: int = 0
    n_samples: int = 0


class _CurveTrainer(SAETrainer):
    """SAETrainer that records a training curve without wandb.

    `step` is SAELens's public per-step seam (fit() calls it once per batch).
    """

    def __init__(self, *args: Any, log_every: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_every = log_every
        self.curve: list[dict[str, float]] = []

    def step(self, batch: torch.Tensor) -> TrainStepOutput:
        out = super().step(batch)
        step = self.n_training_steps  # not yet advanced by fit()
        last = self.n_training_samples >= self.cfg.total_training_samples
        if step % self.log_every == 0 or last:
            self.curve.append(_curve_point(out, step, self.n_training_samples))
        return out


@torch.no_grad()
def _curve_point(out: TrainStepOutput, step: int, samples: int) -> dict[str, float]:
    x_BC = out.sae_in.float()
    err = (out.sae_out.float() - x_BC).pow(2).sum()
    var = (x_BC - x_BC.mean(0)).pow(2).sum().clamp_min(1e-30)
    point = {"step": step, "samples": samples, "loss": float(out.loss)}
    point |= {name: float(v) for name, v in out.losses.items()}
    point["l0"] = float((out.feature_acts != 0).float().sum(-1).mean())
    point["fvu"] = float(err / var)
    return point


def train_sae(
    cfg: SaeConfig,
    batches: Iterator[torch.Tensor],
    n_components: int,
    n_tokens: int,
) -> TrainResult:
    """Train a `cfg.architecture` SAE on `cfg.epochs` x `n_tokens` rows of `batches`.

    `batches` must yield full `[cfg.batch_size, n_components]` tensors
    (`shuffled_batches` does). Every SAETrainerConfig field is set here on
    purpose, so a SAELens default change cannot change our training.
    """
    problem = cfg.steps_problem(n_tokens)
    if problem:
        raise ValueError(problem)
    total = cfg.n_steps(n_tokens) * cfg.batch_size
    device = str(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    sae_cfg = training_sae_config(cfg, n_components, device)
    sae = get_sae_training_class(sae_cfg.architecture())[0](sae_cfg)
    trainer = _CurveTrainer(
        trainer_config(cfg, total, device), sae, batches, log_every=cfg.log_every
    )
    trained = trainer.fit()
    return TrainResult(
        sae=trained,
        curve=trainer.curve,
        n_steps=trainer.n_training_steps,
        n_samples=trainer.n_training_samples,
    )


def trainer_config(cfg: SaeConfig, total: int, device: str) -> SAETrainerConfig:
    """SAELens trainer settings for `total` training samples (every field set)."""
    if cfg.lr_warmup_steps >= total // cfg.batch_size:
        raise ValueError(
            f"sae.lr_warmup_steps={cfg.lr_warmup_steps} is not below the "
            f"{total // cfg.batch_size} training steps"
        )
    return SAETrainerConfig(
        total_training_samples=total,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=cfg.lr_warmup_steps,
        lr_decay_steps=0,
        n_restart_cycles=1,
        adam_beta1=0.9,
        adam_beta2=0.999,
        device=device,
        autocast=False,
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=max(cfg.dead_feature_window, 1),
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=NORM_ESTIMATE_BATCHES,
    )


def save_sae(sae: TrainingSAE, out_dir: Path | str) -> None:
    """Write the inference SAE (JumpReLU for BatchTopK, TopK for TopK) in
    SAELens's on-disk format, atomically."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        sae.save_inference_model(tmp)


def train_on_shards(shards: Any, cfg: SaeConfig, model_dir: Path | str) -> dict:
    """Train on a ShardSet's training documents, save to `model_dir`, evaluate
    the saved model.

    Returns the metrics.json content: evaluation of the reloaded (inference)
    SAE over every training token once (which latents are alive is decided
    there), under `heldout` the same over the held-out documents
    (`sae.heldout_every`, `lorascope.sae.split`), plus the training curve and
    sizes.
    """
    train, heldout = split_views(shards, cfg.heldout_every)
    if train.n_tokens == 0:
        raise ValueError(
            f"sae.heldout_every={cfg.heldout_every}: every document of the "
            "activation shards is held out, none is left to train on"
        )
    result = train_sae(
        cfg, training_batches(train, cfg), shards.n_components, train.n_tokens
    )
    save_sae(result.sae, model_dir)
    sae = load_sae(model_dir, device=str(resolve_device(cfg.device)))
    metrics = evaluate_sae(
        sae, train.iter_batches(cfg.batch_size), cfg.dead_frac_threshold
    )
    metrics["evaluated_on"] = "every token of the training documents, once"
    if heldout is not None:
        held = evaluate_sae(
            sae, heldout.iter_batches(cfg.batch_size), cfg.dead_frac_threshold
        )
        metrics["heldout"] = {
            k: held[k]
            for k in ("fvu", "mse_per_token", "mean_l0", "n_tokens", "dead_fraction")
        }
        metrics["heldout"]["documents"] = f"doc % {cfg.heldout_every} == 0"
    if uses_k(result.sae.cfg):
        metrics["k"] = cfg.k
    metrics["n_training_steps"] = result.n_steps
    metrics["n_training_samples"] = result.n_samples
    if hasattr(sae, "threshold"):  # saved as JumpReLU; the largest threshold
        metrics["jumprelu_threshold"] = float(sae.threshold.detach().max())
    metrics["architecture"] = cfg.architecture
    metrics["curve"] = result.curve
    return metrics
