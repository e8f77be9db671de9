"""Evaluation of a saved SAE over the activation shards: FVU, L0, dead latents.

Used by rule `train_sae` (metrics.json) after the trained SAE is saved and
reloaded, so the numbers describe the model every later stage encodes with.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from sae_lens import SAE

__all__ = ["evaluate_sae"]


def evaluate_sae(
    sae: SAE, batches: Iterable[torch.Tensor], dead_frac_threshold: float = 0.0
) -> dict[str, Any]:
    """FVU, mean L0 and per-latent firing over every row of `batches` (one pass).

    FVU = sum |x - x_hat|^2 / sum |x - mean(x)|^2 over all tokens, with the
    sums in float64 so a single pass over ten million tokens stays exact.
    """
    d_sae = sae.cfg.d_sae
    device = sae.W_dec.device
    fires_F = torch.zeros(d_sae, dtype=torch.float64, device=device)
    sum_C = torch.zeros(sae.cfg.d_in, dtype=torch.float64, device=device)
    sq = err = l0 = 0.0
    n = 0
    # No graph. A context, not a decorator: mutmut 3 does not mutate decorated
    # functions, so the decorator hid this one from `make mutation`.
    with torch.no_grad():
        for x_BC in batches:
            x_BC = x_BC.to(device=device, dtype=torch.float32)
            acts_BF = sae.encode(x_BC)
            recon_BC = sae.decode(acts_BF)
            active_BF = acts_BF != 0
            fires_F += active_BF.sum(0, dtype=torch.float64)
            l0 += float(active_BF.sum(dtype=torch.float64))
            err += float((recon_BC - x_BC).double().pow(2).sum())
            sq += float(x_BC.double().pow(2).sum())
            sum_C += x_BC.double().sum(0)
            n += x_BC.shape[0]
    if n == 0:
        raise ValueError("evaluate_sae: the activation data yielded no rows")
    total_var = sq - float(sum_C.pow(2).sum()) / n
    frac_F = fires_F / n
    alive_F = frac_F > dead_frac_threshold
    return {
        "fvu": err / total_var if total_var > 0 else float("nan"),
        "mse_per_token": err / n,
        "mean_l0": l0 / n,
        "n_tokens": n,
        "d_in": sae.cfg.d_in,
        "d_sae": d_sae,
        "alive_count": int(alive_F.sum()),
        "dead_fraction": float(1 - alive_F.double().mean()),
        "alive_latents": alive_F.nonzero().flatten().tolist(),
        "frac_active": frac_F.tolist(),
    }
