"""Loading base models, tokenizers and LoRA adapters the same way everywhere.

`model.base: toy` means the embedded toy model materialised by rule
`toy_base_model`; anything else is a Hugging Face hub id or a local path,
loaded with `from_pretrained` (at paper scale: Qwen/Qwen2.5-32B-Instruct).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lorascope.core.names import is_toy
from lorascope.core.runtime import resolve_device, torch_dtype

# torch and transformers are imported inside the loaders: the Snakefile
# imports this module (base_model_path) and must parse in a second.


def base_model_path(model_cfg: dict, run_dir: Path | str) -> str:
    """Where the base model comes from: the toy dir under the run, or a hub id."""
    if is_toy(model_cfg["base"]):
        return str(Path(run_dir) / "toy" / "base_model")
    return model_cfg["base"]


# A tokenizer saved from a plain `tokenizers` object (the toy one) records
# one of these classes. AutoTokenizer would ignore that and build the class
# implied by config.json's model_type (Qwen2Tokenizer, which drops the toy
# vocabulary's spaces and newlines), so such folders load as the generic class.
_GENERIC_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path: str, revision: str | None = None):
    from transformers import AutoTokenizer

    saved = Path(path) / "tokenizer_config.json"
    if (
        saved.is_file()
        and json.loads(saved.read_text()).get("tokenizer_class")
        in _GENERIC_TOKENIZER_CLASSES
    ):
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        tok = AutoTokenizer.from_pretrained(path, revision=revision)
    if tok.pad_token is None:
        # Qwen ships a pad token; some Llama tokenizers do not.
        tok.pad_token = tok.eos_token
    probe = "Answer: 12 + 3\n"
    ids = tok(probe, add_special_tokens=False)["input_ids"]
    if not ids or tok.decode(ids) != probe:
        raise ValueError(
            f"tokenizer at {path!r} does not round-trip text ({probe!r} -> "
            f"{tok.decode(ids)!r}); check its tokenizer class"
        )
    return tok


def require_attention_kernel(kernel: str) -> None:
    """Fail now, in the job's own environment, if `kernel` needs a package
    it cannot import (flash_attention_2: flash-attn). Snakemake's check at
    parse time reads another interpreter and is only a hint."""
    if kernel != "flash_attention_2":
        return
    try:
        import flash_attn  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            "model.attn_implementation is flash_attention_2, but this job's "
            f"Python ({sys.executable}) cannot import flash_attn ({err}). "
            "Install flash-attn in the environment the jobs run in "
            "(config/README.md, 'Attention kernels'), or use sdpa"
        ) from None


def load_causal_lm(
    path: str,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    device: str | None = "auto",
    revision: str | None = None,
):
    """A causal LM in eval mode on `device`; `device=None` leaves it where
    `from_pretrained` put it (training: on the meta device on the FSDP ranks
    that receive their shard from rank 0, see lorascope.train.trainer)."""
    from transformers import AutoModelForCausalLM

    require_attention_kernel(attn_implementation)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        revision=revision,
        dtype=torch_dtype(dtype),
        attn_implementation=attn_implementation,
    )
    if device is not None:
        model = model.to(resolve_device(device))
    return model.eval()


def load_lora_model(base, adapter_dir: str | Path, is_trainable: bool = False):
    """Wrap a loaded base model with a PEFT adapter directory."""
    from peft import PeftModel

    from lorascope.core.components import check_adapter
    from lorascope.core.finite import check_finite_files
    from lorascope.core.lean_lora import install_lean_forwards

    check_adapter(adapter_dir, modules=None)  # clear error on a corrupt adapter
    check_finite_files(sorted(Path(adapter_dir).glob("*.safetensors")))
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=is_trainable)
    install_lean_forwards(model)  # same arithmetic as PEFT's, less overhead
    return model


def load_lora_skeleton(
    path: str, adapter_dir: str | Path, dtype: str = "float32", revision=None
):
    """The PEFT model of `adapter_dir` over `path`'s architecture built on the
    meta device: module names, shapes and each LoRA layer's scaling as
    `load_lora_model` gives them, and no weights (not even the adapter's:
    read what a job needs with lorascope.core.weights). Same adapter checks."""
    import warnings

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, revision=revision)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))
    with warnings.catch_warnings():
        # The adapter's weights land on meta parameters: a no-op, as meant.
        warnings.filterwarnings("ignore", "for .*: copying from a non-meta")
        return load_lora_model(base, adapter_dir).eval()


def skeleton_module_names(path: str, revision: str | None = None) -> set[str]:
    """The last name component of every module of the model at `path` (a
    local dir, or a hub id already in the local cache), built on the meta
    device from its config.json alone: no weights read, nothing downloaded.
    Raises OSError when the config is not on disk."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(path, revision=revision, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}


def n_layers(model) -> int:
    cfg = model.config
    return int(
        getattr(cfg, "num_hidden_layers", None)
        or cfg.get_text_config().num_hidden_layers
    )


def model_kwargs(model_cfg: dict) -> dict:
    """The subset of the `model:` config that `load_causal_lm` takes."""
    return {
        "dtype": model_cfg["dtype"],
        "attn_implementation": model_cfg["attn_implementation"],
        "revision": model_cfg.get("revision"),
    }


def resolve_model_dir(
    path: str | Path, revision: str | None = None
) -> tuple[str, str | None]:
    """(model id or path, revision), following `POINTER.json` if `path` has one.

    `train/full/model/` is a saved model or, at paper scale, a pointer to a
    named checkpoint (rule `full_checkpoint`) carrying its own revision.
    """
    pointer = Path(path) / "POINTER.json"
    if not pointer.exists():
        return str(path), revision
    data = json.loads(pointer.read_text())
    if not data.get("model"):
        raise ValueError(f"{pointer}: no 'model' entry")
    return data["model"], data.get("revision")
