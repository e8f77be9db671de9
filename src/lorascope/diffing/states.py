"""Residual states of a decoder, and reruns of its suffix from a patched layer
(rule `model_diff`).

The residual stream at layer l is the output of decoder layer l (l = 0..L-1;
for the last layer, the input of the final norm). `Trunk.run` records it for
every layer together with each layer's call kwargs (position embeddings,
masks), so `Trunk.rerun_after(l, h_VTD)` can restart the model from a
replaced layer-l output: the base model with part of the full fine-tune's
change written in. `Head` turns a final residual into next-token log-probs
with one model's final norm and unembedding, so the full fine-tune's
log-probs come from its stored final residual and its own head alone (at
paper scale the two models are never on one card).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Head", "Trunk", "decoder_of", "head_kl", "token_kl"]


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder (`.layers`, `.norm`) of a causal LM or a PeftModel over one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    if not hasattr(decoder, "layers") or not hasattr(decoder, "norm"):
        raise ValueError(f"{type(decoder).__name__} has no .layers/.norm")
    return decoder


class Head:
    """Final norm + unembedding of one model: residual [.., D] -> log-probs."""

    def __init__(self, norm: nn.Module, unembed: nn.Module):
        self.norm, self.unembed = norm, unembed

    @classmethod
    def of(cls, model: nn.Module) -> Head:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return cls(decoder_of(model).norm, base.get_output_embeddings())

    @classmethod
    def with_weights(cls, like: Head, norm_D: torch.Tensor, unembed_XD: torch.Tensor):
        """`like`'s modules (same norm function and dtype) holding other weights:
        the full fine-tune's head on the card beside the base model."""
        norm, unembed = copy.deepcopy(like.norm), copy.deepcopy(like.unembed)
        with torch.no_grad():
            if norm.weight.shape != norm_D.shape:
                raise ValueError(f"final norm {tuple(norm_D.shape)} vs the base's "
                                 f"{tuple(norm.weight.shape)}")  # fmt: skip
            if unembed.weight.shape != unembed_XD.shape:
                raise ValueError(f"unembedding {tuple(unembed_XD.shape)} vs the "
                                 f"base's {tuple(unembed.weight.shape)}")  # fmt: skip
            norm.weight = nn.Parameter(norm_D.to(norm.weight), requires_grad=False)
            unembed.weight = nn.Parameter(
                unembed_XD.to(unembed.weight), requires_grad=False
            )
        return cls(norm, unembed)

    @torch.no_grad()
    def log_probs(self, hidden: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        """Log-probs in at least float32 over the last dim; tokens in chunks."""
        flat = hidden.reshape(-1, hidden.shape[-1])
        out = []
        for t in range(0, len(flat), chunk):
            logits = self.unembed(self.norm(flat[t : t + chunk]))
            dtype = torch.promote_types(logits.dtype, torch.float32)
            out.append(F.log_softmax(logits.to(dtype), -1))
        return torch.cat(out).reshape(*hidden.shape[:-1], -1)


def token_kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position over the last dim (clamped at 0: rounding)."""
    return (p_logp.exp() * (p_logp - q_logp)).sum(-1).clamp_min(0.0)


@torch.no_grad()
def head_kl(
    p_logp_TX: torch.Tensor, head: Head, hidden_VTD: torch.Tensor, chunk: int = 512
) -> torch.Tensor:
    """KL(p || head(hidden)) per row and token [V, T], the rows' log-probs
    made `chunk` tokens at a time (never all [V, T, X] at once)."""
    out = []
    for t in range(0, hidden_VTD.shape[1], chunk):
        q_VtX = head.log_probs(hidden_VTD[:, t : t + chunk], chunk)
        out.append(token_kl(p_logp_TX[None, t : t + chunk], q_VtX))
    return torch.cat(out, dim=1)


class Trunk:
    """Runs a model once, keeping every layer's output and call kwargs."""

    def __init__(self, model: nn.Module):
        decoder = decoder_of(model)
        self.model, self.layers, self.norm = model, decoder.layers, decoder.norm

    @torch.no_grad()
    def run(self, ids_1T: torch.Tensor, keep_on: str = "cpu") -> torch.Tensor:
        """Residual after every layer, [L, T, D] (the model's dtype), kept on
        `keep_on`: the host by default, so the card holds one layer's states
        at a time (at 32B and 2048 tokens, all layers are 1.3 GB per model)."""
        n = len(self.layers)
        self.kwargs: list[dict] = [None] * n
        inputs: list[torch.Tensor] = [None] * (n + 1)

        def keep(i):
            def hook(_mod, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                inputs[i] = hidden.to(keep_on)
                self.kwargs[i] = {
                    k: v for k, v in kwargs.items() if k != "hidden_states"
                }

            return hook

        def keep_final(_mod, args):
            inputs[n] = args[0].to(keep_on)

        handles = [
            layer.register_forward_pre_hook(keep(i), with_kwargs=True)
            for i, layer in enumerate(self.layers)
        ]
        handles.append(self.norm.register_forward_pre_hook(keep_final))
        try:
            self.model(input_ids=ids_1T, use_cache=False, logits_to_keep=1)
        finally:
            for handle in handles:
                handle.remove()
        if any(x is None for x in inputs):
            raise RuntimeError("a decoder layer or the final norm did not run")
        return torch.cat(inputs[1:])  # batch 1: [L, T, D]

    @torch.no_grad()
    def rerun_after(self, layer: int, hidden_VTD: torch.Tensor) -> torch.Tensor:
        """Final residual [V, T, D] with layer `layer`'s output replaced by
        `hidden_VTD` and layers after it recomputed (kwargs of the last run)."""
        for i in range(layer + 1, len(self.layers)):
            out = self.layers[i](hidden_VTD, **self.kwargs[i])
            hidden_VTD = out[0] if isinstance(out, tuple) else out
        return hidden_VTD
