"""The `sae:` config section as a dataclass (schema:
workflow/schemas/config.schema.yaml); used by rules `train_sae` and
`sae_features`.

The schema is the one place for the section's defaults, bounds and choices:
`SaeConfig.from_config` fills the section from it and checks the section
against it, so the dataclass repeats none of them.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, fields
from typing import Any

import jsonschema

from lorascope.core.config import load_schema

__all__ = ["SaeConfig", "schema_defaults"]


@functools.cache
def _schema() -> dict:
    return load_schema()


def schema_defaults(section: str) -> dict[str, Any]:
    """The schema's default of every key of the top-level config `section`."""
    props = _schema()["properties"][section]["properties"]
    return {key: copy.deepcopy(spec["default"]) for key, spec in props.items()}


@dataclass
class SaeConfig:
    """The `sae:` config section; see the schema for each key's meaning."""

    architecture: str
    """A key of `lorascope.sae.architectures.ARCHITECTURES`."""
    k: float
    """Mean active latents per token (top-k architectures)."""
    expansion: int
    """Latents per input component: d_sae = expansion x n_components."""
    lr: float
    """Adam learning rate, constant after the warm-up."""
    lr_warmup_steps: int
    """Steps of linear warm-up from 0 to `lr`."""
    batch_size: int
    """Tokens per training step; BatchTopK's top-k runs over this batch."""
    epochs: float
    """Passes over every token in the shards (fractions allowed)."""
    seed: int
    """Seeds the SAE init and the shuffle order of the shards."""
    normalize: str
    """Input normalisation, folded into the saved weights by SAELens."""
    dead_feature_window: int
    """Steps without firing after which a latent counts as dead for the aux loss."""
    aux_loss_coefficient: float
    """Weight of the auxiliary loss that revives dead latents (top-k kinds)."""
    dead_frac_threshold: float
    """After training: a latent is dead if it fires on at most this token share."""
    shuffle_buffer_tokens: int
    """Rows mixed across shards before batching (0: only within-shard shuffle)."""
    device: str
    """Torch device for training and encoding (`auto`: CUDA when present)."""
    log_every: int
    """Record a training-curve point every this many steps."""
    jumprelu_l0_coefficient: float
    """jumprelu: weight of the L0 sparsity penalty."""
    jumprelu_init_threshold: float
    """jumprelu: every latent's initial threshold."""
    jumprelu_bandwidth: float
    """jumprelu: width of the straight-through estimator's kernel."""
    matryoshka_fractions: list[float]
    """matryoshka_batchtopk: inner levels as fractions of the width."""
    heldout_every: int
    """Documents with doc % heldout_every == 0 are held out of training and
    evaluated on (metrics.json `heldout`); 0 = none held out."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SaeConfig:
        """Build from the whole config; null seed/device inherit the top-level
        ones. Missing keys take the schema's defaults; unknown keys and values
        the schema rejects are errors naming the key."""
        section = dict(config.get("sae") or {})
        extra = sorted(set(section) - {f.name for f in fields(cls)})
        if extra:
            raise ValueError(f"sae: unknown keys {extra}")
        section = schema_defaults("sae") | section
        for key in ("seed", "device"):
            if section[key] is None:
                top = _schema()["properties"][key]["default"]
                section[key] = config.get(key, top)
        _check(section)
        return cls(**section)

    def d_sae(self, n_components: int) -> int:
        return self.expansion * n_components

    def n_steps(self, n_tokens: int) -> int:
        """Training steps on `n_tokens` rows: `epochs` passes, whole batches."""
        return math.floor(self.epochs * n_tokens / self.batch_size)

    def steps_problem(self, n_tokens: int) -> str | None:
        """Why `n_tokens` rows cannot train this SAE (too few for one batch,
        or for the warm-up), naming the key; None if they can. Checked by
        the job and, from the activations manifest, before any job starts
        (lorascope.workflow.preflight)."""
        steps = self.n_steps(n_tokens)
        if steps < 1:
            return (
                f"sae.batch_size: {self.epochs} epochs of {n_tokens} tokens is "
                f"less than one batch of sae.batch_size={self.batch_size}; lower "
                "the batch size or raise sae.epochs"
            )
        if self.lr_warmup_steps >= steps:
            return (
                f"sae.lr_warmup_steps={self.lr_warmup_steps} is not below the "
                f"{steps} training steps (sae.epochs {self.epochs} x {n_tokens} "
                f"tokens / sae.batch_size {self.batch_size})"
            )
        return None


def _check(section: dict[str, Any]) -> None:
    """Raise ValueError naming every key whose value the schema rejects."""
    validator = jsonschema.Draft202012Validator(_schema()["properties"]["sae"])
    problems = [
        ".".join(["sae", *map(str, e.absolute_path)]) + f": {e.message}"
        for e in sorted(validator.iter_errors(section), key=lambda e: e.json_path)
    ]
    if problems:
        raise ValueError("; ".join(problems))
