"""Loading a saved SAE: the artifact rule `train_sae` writes (SAELens format).

Its own module so that the stages that never touch an SAE (evaluation, whose
vLLM environment has no sae-lens) do not import it, even lazily.

The jobs that only read an SAE (sae_features, causal_*, steering_sweep) get a
`SavedSae`: the SAELens inference SAE's encode/decode re-stated over the
safetensors weights, because loading through SAELens costs 7.4 s of CPU in a
fresh interpreter (1.8 s this way; most of the difference is transformer_lens),
more than such a job's work on the toy. It
covers exactly what `train_sae` saves (JumpReLU and TopK, normalisation
folded into the weights, no hook_z reshape); any other saved SAE is loaded by
SAELens itself. tests/unit/test_saes.py checks both against SAELens, bit for
bit, on every architecture `train_sae` can save.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

__all__ = ["SavedSae", "load_sae"]

_KEYS = {"jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
         "topk": {"W_enc", "b_enc", "W_dec", "b_dec"}}  # fmt: skip


@dataclass
class SaeCfg:
    """The fields of SAELens's cfg that readers use (`cfg.d_sae`, `cfg.d_in`,
    `cfg.architecture()`, `cfg.metadata`), from cfg.json."""

    raw: dict[str, Any]
    metadata: SimpleNamespace = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = SimpleNamespace(**(self.raw.get("metadata") or {}))

    @property
    def d_in(self) -> int:
        return int(self.raw["d_in"])

    @property
    def d_sae(self) -> int:
        return int(self.raw["d_sae"])

    def architecture(self) -> str:
        return self.raw["architecture"]


class SavedSae:
    """A saved JumpReLU or TopK SAE, computing what SAELens's inference SAE of
    that architecture computes (sae_lens.saes.jumprelu_sae / topk_sae:
    `process_sae_in` = x - b_dec when apply_b_dec_to_input; no hooks)."""

    def __init__(self, cfg: SaeCfg, weights: dict[str, torch.Tensor]):
        self.cfg = cfg
        self.W_enc = weights["W_enc"]
        self.b_enc = weights["b_enc"]
        self.W_dec = weights["W_dec"]
        self.b_dec = weights["b_dec"]
        if "threshold" in weights:  # JumpReLU only, as on SAELens's SAE
            self.threshold = weights["threshold"]
        self._b_in = cfg.raw.get("apply_b_dec_to_input", True)
        self._rescale = cfg.raw.get("rescale_acts_by_decoder_norm", False)

    def process_sae_in(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's input, as SAELens's `process_sae_in` makes it."""
        return x.to(self.W_enc.dtype) - self.b_dec * self._b_in

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        sae_in = self.process_sae_in(x)
        hidden_pre = sae_in @ self.W_enc + self.b_enc
        if self.cfg.architecture() == "jumprelu":
            mask = (hidden_pre > self.threshold).to(hidden_pre.dtype)
            return torch.relu(hidden_pre) * mask
        if self._rescale:
            hidden_pre = hidden_pre * self.W_dec.norm(dim=-1)
        # SAELens's TopK: k largest (unsorted), ReLU, scattered into zeros
        values, idx = torch.topk(
            hidden_pre, k=int(self.cfg.raw["k"]), dim=-1, sorted=False
        )
        return torch.zeros_like(hidden_pre).scatter(-1, idx, values.relu())

    @torch.no_grad()
    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        if self.cfg.architecture() == "topk" and self._rescale:
            feature_acts = feature_acts * (1 / self.W_dec.norm(dim=-1))
        return feature_acts @ self.W_dec + self.b_dec


def _readable(raw: dict[str, Any], keys: set[str]) -> bool:
    """Whether `SavedSae` computes exactly what SAELens would for this SAE."""
    arch = raw.get("architecture")
    return (
        arch in _KEYS
        and keys == _KEYS[arch]
        and raw.get("normalize_activations", "none") == "none"
        and raw.get("reshape_activations", "none") == "none"
        and not raw.get("finetuning_scaling_factor", False)
    )


def load_sae(model_dir: str | Path, device: str = "cpu"):
    """A saved SAE (SAELens on-disk format, as rule `train_sae` writes it):
    a `SavedSae` when it is one `train_sae` saves, else SAELens's own."""
    from safetensors import safe_open

    from lorascope.core.finite import check_finite_files

    model_dir = Path(model_dir)
    if not (model_dir / "cfg.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no SAELens cfg.json (not a saved SAE)")
    files = sorted(model_dir.glob("*.safetensors"))
    check_finite_files(files)  # names the file
    raw = json.loads((model_dir / "cfg.json").read_text())
    weights_file = model_dir / "sae_weights.safetensors"
    if weights_file.is_file():
        with safe_open(weights_file, framework="pt", device=str(device)) as f:
            keys = set(f.keys())
            if _readable(raw, keys):
                dtype = getattr(torch, raw.get("dtype", "float32"))
                weights = {k: f.get_tensor(k).to(dtype) for k in keys}
                return SavedSae(SaeCfg(raw), weights)
    from sae_lens import SAE  # another SAE's layout: SAELens reads every kind

    return SAE.load_from_disk(model_dir, device=device)
