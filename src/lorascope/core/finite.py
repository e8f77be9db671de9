"""Refuse artifacts holding NaN or Inf, naming the file, tensor and rows.

Used wherever a rule reads trained weights or activations: adapters
(`core.models.load_lora_model`), saved SAEs (`core.saes.load_sae`) and
activation shards (`core.shards.ShardSet`). One NaN spreads silently (a
decode through an identity matrix gives 0 x NaN = NaN for every feature), so
it is stopped where it is read, with a message that says where it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

__all__ = ["CorruptArtifact", "check_finite", "check_finite_files"]


class CorruptArtifact(ValueError):
    """An artifact file is unreadable or holds NaN/Inf values."""


def check_finite(
    tensors: Mapping[str, torch.Tensor], source: str | Path, allow_inf: bool = False
) -> None:
    """Raise CorruptArtifact naming `source`, the tensor and its first bad
    rows (dim 0: an SAE latent, a token, a LoRA output row) if any floating
    tensor holds a NaN or an Inf (`allow_inf`: only NaN, for state whose empty
    slots are +-Inf by design, such as a streamed top-k)."""
    for name, t in tensors.items():
        if not (t.is_floating_point() or t.is_complex()):
            continue
        bad = torch.isnan(t) if allow_inf else ~torch.isfinite(t)
        if not bad.any():
            continue
        first = [int(i) for i in bad.nonzero()[0]]
        kinds = [
            k for k, f in (("NaN", torch.isnan), ("Inf", torch.isinf)) if f(t).any()
        ]
        where = f"at index {first}"
        if t.dim() >= 1:
            rows = bad.reshape(t.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
            shown = ", ".join(map(str, rows[:8])) + (" ..." if len(rows) > 8 else "")
            where = f"in {len(rows)} row(s) of dim 0 [{shown}], first {where}"
        raise CorruptArtifact(
            f"{source}: tensor {name!r} {tuple(t.shape)} holds "
            f"{int(bad.sum())} {'/'.join(kinds)} value(s) {where}"
        )


def check_finite_files(paths: Iterable[str | Path]) -> None:
    """Read each safetensors file one tensor at a time and `check_finite` it;
    a truncated or corrupt file raises CorruptArtifact naming it."""
    from safetensors import safe_open

    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    check_finite({key: f.get_tensor(key)}, path)
        except CorruptArtifact:
            raise
        except Exception as e:  # safetensors raises several types on bad files
            raise CorruptArtifact(f"{path}: unreadable safetensors file ({e})") from e
