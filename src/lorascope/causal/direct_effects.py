"""Direct effect of LoRA directions and SAE features on the output tokens
(rule `direct_effects`); also each SAE feature's decoder fingerprint.

A component whose `lora_B` writes into the residual stream (o_proj,
down_proj) adds `scalar * scaling * b_D` to it. Its direct effect on the
logits is read through the final norm and the unembedding, logit-lens
style: `W_U (g * b_D) * scaling`, with g the final norm's weight. This is an
approximation: it drops the norm's division by the residual's RMS (a
positive per-token factor, so the token ranking is unchanged per position,
not the scale) and every path through later layers. An SAE feature writes
`sum_c dir_fc * scaling_c * b_c` over those components (its decoder row in
raw-scalar space); what it writes through q, k, v, gate and up acts only via
later computation and is not part of the direct effect.

The job reads no full model: the PEFT model is built on the meta device
(order and scaling as loading gives them), and lora_B, the final norm and
the unembedding are read from their safetensors files (`adapter_writes`,
`read_head`); `writes` and `model_head` read the same from a loaded model
(tests/unit/test_direct_effects.py checks that both give the same table).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from lorascope.core.components import ADAPTER_WEIGHTS, lora_modules

__all__ = [
    "RESIDUAL_WRITERS",
    "adapter_writes",
    "decoder_fingerprint",
    "direct_effects",
    "head_names",
    "model_head",
    "read_head",
    "writes",
]

RESIDUAL_WRITERS = ("o", "down")


def _writes(peft_model: nn.Module, b_of: Callable) -> tuple[torch.Tensor, np.ndarray]:
    """Rows of `writes` with lora_B (d_out, r) of each (LoraModule, layer,
    adapter name) from `b_of`."""
    rows, writer = [], []
    zero_D = torch.zeros(peft_model.get_base_model().config.hidden_size)
    for info, layer in lora_modules(peft_model):
        (name,) = [a for a in layer.active_adapters if a in layer.lora_B]
        b_DR = b_of(info, layer, name).float().cpu() * float(layer.scaling[name])
        for slot in range(b_DR.shape[1]):
            is_writer = info.module in RESIDUAL_WRITERS
            rows.append(b_DR[:, slot] if is_writer else zero_D)
            writer.append(is_writer)
    return torch.stack(rows), np.array(writer)


@torch.no_grad()
def writes(peft_model: nn.Module) -> tuple[torch.Tensor, np.ndarray]:
    """Residual write per unit scalar, [C, D] in component order (zero rows for
    components that do not write the residual stream), and the writer mask [C],
    from a loaded PeftModel."""
    return _writes(peft_model, lambda info, layer, name: layer.lora_B[name].weight)


@torch.no_grad()
def adapter_writes(
    skeleton: nn.Module, adapter_dir: str | Path
) -> tuple[torch.Tensor, np.ndarray]:
    """`writes` of a PeftModel built on the meta device
    (lorascope.core.models.load_lora_skeleton: order and scaling from PEFT),
    lora_B read from the adapter's file as stored (PEFT keeps adapter
    weights in float32 over a bfloat16 or float16 base: no rounding)."""
    from safetensors import safe_open

    with safe_open(Path(adapter_dir) / ADAPTER_WEIGHTS, framework="pt") as f:
        keys = set(f.keys())

        def b_of(info, layer, name):
            for key in (f"base_model.model.{info.name}.lora_B.weight",
                        f"{info.name}.lora_B.weight"):  # fmt: skip
                if key in keys:
                    return f.get_tensor(key)
            raise KeyError(f"{adapter_dir}: no lora_B weight for {info.name}")

        return _writes(skeleton, b_of)


def head_names(base: nn.Module) -> tuple[str, str, str]:
    """Checkpoint names of the final norm's weight, the unembedding's and the
    input embedding's (what a tied checkpoint stores instead)."""
    path = {id(module): name for name, module in base.named_modules()}
    return tuple(
        f"{path[id(module)]}.weight"
        for module in (
            base.get_decoder().norm,
            base.get_output_embeddings(),
            base.get_input_embeddings(),
        )
    )


def read_head(
    skeleton: nn.Module, path: str, revision: str | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(final norm [D], unembedding [X, D]) in float32, read from the base
    model's safetensors files (lorascope.core.weights; a tied model stores
    the embedding only) and passed through `dtype` as loading does."""
    from lorascope.core.weights import read_tensors, tensor_files

    base = skeleton.get_base_model()
    norm, unembed, embed = head_names(base)
    if unembed not in tensor_files(path, revision)[0]:
        if not base.config.tie_word_embeddings:
            raise ValueError(f"{path}: no {unembed!r} and the embeddings are not tied")
        unembed = embed
    found = read_tensors(path, [norm, unembed], revision)
    return tuple(found[n].to(dtype).float() for n in (norm, unembed))


def model_head(peft_model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(final norm [D], unembedding [X, D]) in float32 of a loaded model."""
    base = peft_model.get_base_model()
    norm_D = base.get_decoder().norm.weight.float().cpu()
    return norm_D, base.get_output_embeddings().weight.float().cpu()


@torch.no_grad()
def direct_effects(
    norm_D: torch.Tensor,
    unembed_XD: torch.Tensor,
    write_GD: torch.Tensor,
    keys: pl.DataFrame,
    decode,
    n_tokens: int,
) -> pl.DataFrame:
    """Top promoted / suppressed tokens of each residual write (rows of `keys`:
    kind, feature, label), through the final norm's weight and the
    unembedding. Rows whose write is zero are left out."""
    rows = []
    for g, key in enumerate(keys.iter_rows(named=True)):
        if not write_GD[g].any():
            continue
        logits_X = unembed_XD @ (norm_D * write_GD[g].float())
        k = min(n_tokens, len(logits_X))
        for direction, largest in (("promoted", True), ("suppressed", False)):
            top = torch.topk(logits_X, k, largest=largest)
            for rank, (value, tok) in enumerate(
                zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ):
                rows.append(
                    {**key, "direction": direction, "rank": rank, "token_id": tok,
                     "token": decode([tok])[0], "logit": value}
                )  # fmt: skip
    schema = {**keys.schema, "direction": pl.Utf8, "rank": pl.Int64}
    schema |= {"token_id": pl.Int64, "token": pl.Utf8, "logit": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def decoder_fingerprint(
    features: pl.DataFrame, dir_FC: torch.Tensor, table: pl.DataFrame
) -> pl.DataFrame:
    """Long frame: per SAE feature (features.parquet rows) and component, the
    decoder weight in raw-scalar space (for the dashboards' layer x module map)."""
    latent_G = features["latent"].to_numpy()
    weight_GC = dir_FC[torch.tensor(latent_G.tolist())].double().numpy()
    n_c = table.height
    comp = table.select("index", "layer", "module", "rank_slot")
    return pl.DataFrame(
        {
            "feature": np.repeat(features["feature"].to_numpy(), n_c),
            "index": np.tile(comp["index"].to_numpy(), len(latent_G)),
            "weight": weight_GC.reshape(-1),
        }
    ).join(comp, on="index", how="left")
