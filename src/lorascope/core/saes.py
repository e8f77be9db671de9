"""Loading a saved SAE: the artifact rule `train_sae` writes (SAELens format).

Its own module so that the stages that never touch an SAE (evaluation, whose
vLLM environment has no sae-lens) do not import it, even lazily.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["load_sae"]


def load_sae(model_dir: str | Path, device: str = "cpu"):
    """A saved SAE (SAELens on-disk format, as rule `train_sae` writes it)."""
    from sae_lens import SAE

    from lorascope.core.finite import check_finite_files

    model_dir = Path(model_dir)
    if not (model_dir / "cfg.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no SAELens cfg.json (not a saved SAE)")
    check_finite_files(sorted(model_dir.glob("*.safetensors")))  # names the file
    return SAE.load_from_disk(model_dir, device=device)
