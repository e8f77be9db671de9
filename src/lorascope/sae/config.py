"""The `sae:` config section as a dataclass (schema:
workflow/schemas/config.schema.yaml); used by rules `train_sae` and
`sae_features`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = ["Normalisation", "SaeConfig"]

Normalisation = Literal["none", "expected_average_only_in", "covariance_whitening"]


@dataclass
class SaeConfig:
    """The `sae:` config section (schema: workflow/schemas/config.schema.yaml)."""

    k: float = 4
    """Mean active latents per token (BatchTopK keeps k x batch over the batch)."""
    expansion: int = 8
    """Latents per input component: d_sae = expansion x n_components."""
    lr: float = 3e-3
    """Adam learning rate, constant after the warm-up."""
    lr_warmup_steps: int = 0
    """Steps of linear warm-up from 0 to `lr` (the public code: 100)."""
    batch_size: int = 512
    """Tokens per training step; BatchTopK's top-k runs over this batch."""
    epochs: float = 5.0
    """Passes over every token in the shards (fractions allowed)."""
    seed: int = 0
    """Seeds the SAE init and the shuffle order of the shards."""
    normalize: Normalisation = "none"
    """Input normalisation, folded into the saved weights by SAELens."""
    dead_feature_window: int = 200
    """Steps without firing after which a latent counts as dead for the aux loss."""
    aux_loss_coefficient: float = 1 / 32
    """Weight of the auxiliary loss that revives dead latents."""
    dead_frac_threshold: float = 0.0
    """After training: a latent is dead if it fires on at most this token share."""
    shuffle_buffer_tokens: int = 65536
    """Rows mixed across shards before batching (0: only within-shard shuffle)."""
    device: str = "auto"
    """Torch device for training and encoding (`auto`: CUDA when present)."""
    log_every: int = 20
    """Record a training-curve point every this many steps."""

    def __post_init__(self) -> None:
        if not self.k > 0:
            raise ValueError(f"sae.k must be > 0, got {self.k}")
        if self.expansion < 1:
            raise ValueError(f"sae.expansion must be >= 1, got {self.expansion}")
        if not self.lr > 0:
            raise ValueError(f"sae.lr must be > 0, got {self.lr}")
        if self.lr_warmup_steps < 0:
            raise ValueError(
                f"sae.lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}"
            )
        if self.batch_size < 1:
            raise ValueError(f"sae.batch_size must be >= 1, got {self.batch_size}")
        if not self.epochs > 0:
            raise ValueError(f"sae.epochs must be > 0, got {self.epochs}")
        if self.normalize not in get_args(Normalisation):
            raise ValueError(f"sae.normalize: unknown value {self.normalize!r}")
        if self.dead_feature_window < 1:
            raise ValueError(
                f"sae.dead_feature_window must be >= 1, got {self.dead_feature_window}"
            )
        if self.aux_loss_coefficient < 0:
            raise ValueError("sae.aux_loss_coefficient must be >= 0")
        if not 0.0 <= self.dead_frac_threshold < 1.0:
            raise ValueError("sae.dead_frac_threshold must be in [0, 1)")
        if self.shuffle_buffer_tokens < 0:
            raise ValueError("sae.shuffle_buffer_tokens must be >= 0")
        if self.log_every < 1:
            raise ValueError(f"sae.log_every must be >= 1, got {self.log_every}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SaeConfig:
        """Build from the whole validated config; null seed/device inherit the
        top-level ones. Unknown keys in `sae:` are an error."""
        section = dict(config.get("sae") or {})
        extra = sorted(set(section) - set(cls.__dataclass_fields__))
        if extra:
            raise ValueError(f"sae: unknown keys {extra}")
        for key in ("seed", "device"):
            if section.get(key) is None and key in config:
                section[key] = config[key]
        section = {k: v for k, v in section.items() if v is not None}
        return cls(**section)

    def d_sae(self, n_components: int) -> int:
        return self.expansion * n_components
