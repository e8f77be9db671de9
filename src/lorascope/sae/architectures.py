"""One builder per SAE architecture (config key `sae.architecture`).

Used by `lorascope.sae.training.train_sae` (rule `train_sae`). A builder turns
the `sae:` section into the SAELens training-SAE config of its architecture;
SAELens's registry gives the training class, `SAETrainer` trains it, and
`save_inference_model` writes the SAE that `sae_lens.SAE.load_from_disk`
reads back (batchtopk, matryoshka_batchtopk and jumprelu as a JumpReLU SAE,
topk as a TopK SAE). Every field that shapes training is set here on purpose,
so a SAELens default change cannot change our SAE.

Adding an architecture: a builder here, its row in `ARCHITECTURES`, its name
in the schema's `sae.architecture` enum (with any keys of its own); a top-k
kind also joins `TOPK_ARCHITECTURES` in `lorascope.core.checks` (k <= width).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from sae_lens import (
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAEConfig,
    MatryoshkaBatchTopKTrainingSAEConfig,
    TopKTrainingSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata, TrainingSAEConfig

from lorascope.sae.config import SaeConfig

__all__ = ["ARCHITECTURES", "training_sae_config", "uses_k"]


def _common(cfg: SaeConfig, n_components: int, device: str) -> dict[str, Any]:
    """Fields every architecture shares."""
    return dict(
        d_in=n_components,
        d_sae=cfg.d_sae(n_components),
        decoder_init_norm=0.1,
        apply_b_dec_to_input=True,
        normalize_activations=cfg.normalize,
        dtype="float32",
        device=device,
        metadata=SAEMetadata(hook_name="lora_scalars", model_name="lorascope"),
    )


def _topk_common(cfg: SaeConfig, k: float) -> dict[str, Any]:
    """Fields the top-k kinds share (decoder-norm rescaling as in the paper)."""
    return dict(
        k=k,
        aux_loss_coefficient=cfg.aux_loss_coefficient,
        rescale_acts_by_decoder_norm=True,
        use_sparse_activations=False,
    )


def batchtopk(cfg: SaeConfig, n_components: int, device: str) -> TrainingSAEConfig:
    """The paper's BatchTopK: k x batch largest codes over each batch."""
    return BatchTopKTrainingSAEConfig(
        **_common(cfg, n_components, device),
        **_topk_common(cfg, cfg.k),
        topk_threshold_lr=0.01,
    )


def topk(cfg: SaeConfig, n_components: int, device: str) -> TrainingSAEConfig:
    """Per-token TopK: the k largest codes of every token."""
    if cfg.k != int(cfg.k):
        raise ValueError(f"sae.k={cfg.k}: sae.architecture topk needs a whole k")
    return TopKTrainingSAEConfig(
        **_common(cfg, n_components, device), **_topk_common(cfg, int(cfg.k))
    )


def jumprelu(cfg: SaeConfig, n_components: int, device: str) -> TrainingSAEConfig:
    """JumpReLU with a learned threshold per latent and DeepMind's step L0 loss."""
    return JumpReLUTrainingSAEConfig(
        **_common(cfg, n_components, device),
        jumprelu_init_threshold=cfg.jumprelu_init_threshold,
        jumprelu_bandwidth=cfg.jumprelu_bandwidth,
        jumprelu_sparsity_loss_mode="step",
        l0_coefficient=cfg.jumprelu_l0_coefficient,
        l0_warm_up_steps=0,
        pre_act_loss_coefficient=None,
        jumprelu_ste_to_input=False,
        target_l0=None,
    )


def matryoshka_batchtopk(
    cfg: SaeConfig, n_components: int, device: str
) -> TrainingSAEConfig:
    """BatchTopK plus a reconstruction loss for each nested prefix of latents."""
    d_sae = cfg.d_sae(n_components)
    widths = [round(f * d_sae) for f in cfg.matryoshka_fractions] + [d_sae]
    if widths[0] < 1 or any(a >= b for a, b in itertools.pairwise(widths)):
        raise ValueError(
            f"sae.matryoshka_fractions {cfg.matryoshka_fractions} of the width "
            f"{d_sae} give the levels {widths}: they must be whole, positive and "
            "strictly increasing"
        )
    return MatryoshkaBatchTopKTrainingSAEConfig(
        **_common(cfg, n_components, device),
        **_topk_common(cfg, cfg.k),
        topk_threshold_lr=0.01,
        matryoshka_widths=widths,
        use_matryoshka_aux_loss=False,
    )


Builder = Callable[[SaeConfig, int, str], TrainingSAEConfig]

ARCHITECTURES: dict[str, Builder] = {
    "batchtopk": batchtopk,
    "topk": topk,
    "jumprelu": jumprelu,
    "matryoshka_batchtopk": matryoshka_batchtopk,
}


def training_sae_config(
    cfg: SaeConfig, n_components: int, device: str
) -> TrainingSAEConfig:
    """The SAELens training config of `cfg.architecture`."""
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(
            f"sae.architecture: unknown {cfg.architecture!r} "
            f"(known: {', '.join(ARCHITECTURES)})"
        )
    return ARCHITECTURES[cfg.architecture](cfg, n_components, device)


def uses_k(sae_cfg: TrainingSAEConfig) -> bool:
    """Whether sparsity is set by `sae.k` (the top-k kinds) or otherwise."""
    return isinstance(sae_cfg, TopKTrainingSAEConfig)
