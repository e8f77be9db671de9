"""Can the full fine-tune be compared with the base, layer by layer and token
by token? (rule `model_diff`, and the Snakefile before any job.)

Residual differences need the same architecture, hidden size and layer
count; token-level KL and shared inputs need the same tokenizer. Checked from
the files alone (config.json, tokenizer.json / vocab), no torch: at parse
time for whatever is on disk then (a local full fine-tune, the toy or a
local base, prefetched snapshots), and again by the job before it writes
anything (`require_compatible`, for hub ids resolved only there).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = [
    "compatibility_problems",
    "model_files",
    "require_compatible",
    "tokenizer_digest",
]

# config.json fields that must agree: residuals of the same width and depth
# from the same kind of layers, log-probs over the same vocabulary.
SHAPE_KEYS = (
    "model_type",
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "vocab_size",
)


def _text_config(cfg: dict) -> dict:
    """The decoder's config (multimodal configs nest it)."""
    return {**cfg, **cfg.get("text_config", {})}


def tokenizer_digest(model_dir: str | Path) -> str | None:
    """A digest of the vocabulary (tokenizer.json's model and added tokens,
    else vocab.json + merges.txt); None when the folder holds no tokenizer."""
    folder = Path(model_dir)
    tok = folder / "tokenizer.json"
    if tok.is_file():
        data = json.loads(tok.read_text())
        model = data.get("model", {})
        added = [(t.get("id"), t.get("content")) for t in data.get("added_tokens", [])]
        keep = {
            "vocab": model.get("vocab"),
            "merges": model.get("merges"),
            "added": added,
        }  # fmt: skip
        blob = json.dumps(keep, sort_keys=True).encode()
    elif (folder / "vocab.json").is_file():
        blob = (folder / "vocab.json").read_bytes()
        merges = folder / "merges.txt"
        blob += merges.read_bytes() if merges.is_file() else b""
    else:
        return None
    return hashlib.sha256(blob).hexdigest()


def compatibility_problems(
    base_dir: str | Path, full_dir: str | Path, base_name: str, full_name: str
) -> list[str]:
    """Why `full_dir`'s model cannot be diffed against `base_dir`'s, one line
    per difference naming both (empty: compatible). Folders without a
    config.json are not checked (say so elsewhere)."""
    files = {}
    for name, folder in ((base_name, base_dir), (full_name, full_dir)):
        path = Path(folder) / "config.json"
        if not path.is_file():
            return []
        files[name] = _text_config(json.loads(path.read_text()))
    base, full = files[base_name], files[full_name]
    problems = [
        f"{key}: {base.get(key)!r} in the base model ({base_name}) but "
        f"{full.get(key)!r} in the full fine-tune ({full_name})"
        for key in SHAPE_KEYS
        if base.get(key) != full.get(key)
    ]
    digests = [tokenizer_digest(base_dir), tokenizer_digest(full_dir)]
    if None not in digests and digests[0] != digests[1]:
        problems.append(
            f"tokenizer: the base model ({base_name}) and the full fine-tune "
            f"({full_name}) have different vocabularies"
        )
    return problems


def require_compatible(base_dir, full_dir, base_name: str, full_name: str) -> None:
    """Raise ValueError listing every problem (the job, before any write)."""
    problems = compatibility_problems(base_dir, full_dir, base_name, full_name)
    if problems:
        raise ValueError(
            "the full fine-tune cannot be diffed against the base model:\n  "
            + "\n  ".join(problems)
        )


def model_files(path: str, revision: str | None = None) -> Path:
    """The folder holding `path`'s config.json and tokenizer files: the
    directory itself, or for a hub id the cache snapshot those small files
    are downloaded into (the job reads the weights from there next anyway)."""
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    folder = Path(hf_hub_download(path, "config.json", revision=revision)).parent
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        try:
            hf_hub_download(path, name, revision=revision)
        except EntryNotFoundError:
            pass
    return folder
