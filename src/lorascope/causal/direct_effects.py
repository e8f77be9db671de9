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
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch import nn

from lorascope.core.components import lora_modules

__all__ = ["RESIDUAL_WRITERS", "decoder_fingerprint", "direct_effects", "writes"]

RESIDUAL_WRITERS = ("o", "down")


@torch.no_grad()
def writes(peft_model: nn.Module) -> tuple[torch.Tensor, np.ndarray]:
    """Residual write per unit scalar, [C, D] in component order (zero rows for
    components that do not write the residual stream), and the writer mask [C]."""
    rows, writer = [], []
    zero_D = torch.zeros(peft_model.get_base_model().config.hidden_size)
    for info, layer in lora_modules(peft_model):
        (name,) = [a for a in layer.active_adapters if a in layer.lora_B]
        b_DR = layer.lora_B[name].weight.float().cpu() * float(layer.scaling[name])
        for slot in range(b_DR.shape[1]):
            is_writer = info.module in RESIDUAL_WRITERS
            rows.append(b_DR[:, slot] if is_writer else zero_D)
            writer.append(is_writer)
    return torch.stack(rows), np.array(writer)


@torch.no_grad()
def direct_effects(
    peft_model: nn.Module,
    write_GD: torch.Tensor,
    keys: pl.DataFrame,
    decode,
    n_tokens: int,
) -> pl.DataFrame:
    """Top promoted / suppressed tokens of each residual write (rows of `keys`:
    kind, feature, label). Rows whose write is zero are left out."""
    base = peft_model.get_base_model()
    norm_D = base.get_decoder().norm.weight.float().cpu()
    unembed_XD = base.get_output_embeddings().weight.float().cpu()
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
