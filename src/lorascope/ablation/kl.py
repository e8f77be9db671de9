"""KL(full LoRA || ablated LoRA) per layer, component (one direction), group and,
at rank > 1, module (all its directions) (rule `kl_ablation`).

Paper §3.2 / Fig 3. An ablation multiplies the chosen components' scalars by 0
inside the forward (`lorascope.ablation.scalar_control.ScalarControl`), so several
ablations run as rows of one batch. Prefix reuse: an ablation whose first
ablated component sits in layer L cannot change layers < L, so the unablated
pass is run once per sequence, each decoder layer's input is kept, and an
ablation only recomputes layers >= L from that stored input. When every
ablated component of layer L is an MLP projection, the rerun starts after
layer L's attention, from the kept residual (decoder layers of the
pre-norm form `h + attn(norm(h))`, then `h + mlp(norm(h))`, listed in
SPLIT_LAYERS; other layer types rerun whole layers, with the same result).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from lorascope.ablation.scalar_control import ScalarControl, zeroed_lora_b
from lorascope.core.components import select

__all__ = [
    "Ablation",
    "PrefixRunner",
    "ablation_kl",
    "build_ablations",
    "naive_ablation_kl",
]

# Decoder layers whose MLP half is `h + mlp(post_attention_layernorm(h))`
# (checked against transformers 5.x sources).
SPLIT_LAYERS = {
    "Qwen2DecoderLayer",
    "Qwen3DecoderLayer",
    "LlamaDecoderLayer",
    "MistralDecoderLayer",
}


@dataclass(frozen=True)
class Ablation:
    """One ablation: `kind` is layer|component|group|module, `key` names it.

    A component is one row of the component table: one direction (row of
    lora_A) of one adapted module. For a rank > 1 adapter a `module`
    ablation (key `3.gate`) removes all r directions of that module at once.
    """

    kind: str
    key: str
    mask_C: np.ndarray  # bool, True = component ablated
    start_layer: int
    mlp_start: bool = False  # only MLP components ablated in start_layer


def build_ablations(table: pl.DataFrame) -> list[Ablation]:
    """Every layer, every component, all attention and all MLP, in that order;
    then, for a rank > 1 adapter, every module (all its directions at once;
    at rank 1 a module is its one component, measured already)."""
    layer_C = table["layer"].to_numpy()
    mlp_C = table["group"].to_numpy() == "mlp"

    def make(kind: str, key: str, mask_C: np.ndarray) -> Ablation:
        if not mask_C.any():
            raise ValueError(f"ablation {kind}={key} selects no component")
        start = int(layer_C[mask_C].min())
        mlp_start = bool(mlp_C[mask_C & (layer_C == start)].all())
        return Ablation(kind, key, mask_C, start, mlp_start)

    out = [make("layer", str(n), select(table, layers=[n])) for n in np.unique(layer_C)]
    out += [
        make("component", str(i), select(table, indices=[i])) for i in table["index"]
    ]
    out += [make("group", g, select(table, groups=[g])) for g in ("attn", "mlp")]
    if "rank_slot" in table.columns and table["rank_slot"].max() > 0:
        modules = table.select("layer", "module").unique(maintain_order=True)
        out += [
            make("module", f"{n}.{m}", select(table, layers=[n], modules=[m]))
            for n, m in modules.iter_rows()
        ]
    return out


class PrefixRunner:
    """The unablated pass of one sequence, and reruns of its suffix of layers."""

    def __init__(self, peft_model: nn.Module, control: ScalarControl):
        base = peft_model.get_base_model()
        decoder = base.get_decoder()
        if not hasattr(decoder, "layers") or not hasattr(decoder, "norm"):
            raise ValueError(f"{type(decoder).__name__} has no .layers/.norm")
        self.model, self.control = peft_model, control
        self.layers, self.norm = decoder.layers, decoder.norm
        self.lm_head = base.get_output_embeddings()
        self.split = all(type(x).__name__ in SPLIT_LAYERS for x in self.layers)

    @torch.no_grad()
    def reference(
        self, input_ids_1T: torch.Tensor, set_1TC: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run unablated (or with scalars `set_1TC`); keep each layer's input and
        kwargs. Returns scalars [T, C]."""
        self.inputs: list[torch.Tensor] = [None] * len(self.layers)
        self.kwargs: list[dict] = [None] * len(self.layers)

        def keep(i):
            def hook(_mod, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                self.inputs[i] = hidden
                self.kwargs[i] = {
                    k: v for k, v in kwargs.items() if k != "hidden_states"
                }

            return hook

        def keep_mid(i):
            def hook(_mod, args):
                self.mids[i] = args[0]  # residual after layer i's attention

            return hook

        def keep_final(_mod, args):
            self.final = args[0]

        self.mids: list[torch.Tensor] = [None] * len(self.layers)
        handles = [
            layer.register_forward_pre_hook(keep(i), with_kwargs=True)
            for i, layer in enumerate(self.layers)
        ]
        if self.split:
            handles += [
                layer.post_attention_layernorm.register_forward_pre_hook(keep_mid(i))
                for i, layer in enumerate(self.layers)
            ]
        handles.append(self.norm.register_forward_pre_hook(keep_final))
        self.control.clear()
        self.control.record, self.control.set_VTC = True, set_1TC
        try:
            self.model(input_ids=input_ids_1T, use_cache=False, logits_to_keep=1)
        finally:
            for handle in handles:
                handle.remove()
            self.control.record, self.control.set_VTC = False, None
        return self.control.recorded()[0]

    @torch.no_grad()
    def run_from(
        self,
        start: int,
        mult_VC: torch.Tensor | None = None,
        add_VC: torch.Tensor | None = None,
        mlp_start: bool = False,
        set_VTC: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final pre-norm hidden states [V, T, D], scalars edited from layer `start`.

        mlp_start: begin at layer `start`'s MLP half (needs `self.split`).
        """
        n_variants = len(next(x for x in (mult_VC, add_VC, set_VTC) if x is not None))
        if mlp_start and not self.split:
            raise ValueError("mlp_start needs decoder layers listed in SPLIT_LAYERS")
        self.control.mult_VC, self.control.add_VC = mult_VC, add_VC
        self.control.set_VTC = set_VTC
        try:
            if mlp_start:
                layer = self.layers[start]
                resid_VTD = self.mids[start].expand(n_variants, -1, -1)
                hidden_VTD = resid_VTD + layer.mlp(
                    layer.post_attention_layernorm(resid_VTD)
                )
                start += 1
            else:
                hidden_VTD = self.inputs[start].expand(n_variants, -1, -1)
            for i in range(start, len(self.layers)):
                hidden_VTD = self.layers[i](hidden_VTD, **self.kwargs[i])
                if isinstance(hidden_VTD, tuple):
                    hidden_VTD = hidden_VTD[0]
        finally:
            self.control.mult_VC = self.control.add_VC = self.control.set_VTC = None
        return hidden_VTD

    @torch.no_grad()
    def mean_kl(
        self,
        start: int,
        scope_T: torch.Tensor,
        mult_VC: torch.Tensor | None = None,
        add_VC: torch.Tensor | None = None,
        logit_chunk: int = 512,
        mlp_start: bool = False,
    ) -> torch.Tensor:
        """Mean KL(reference || variant) over the scoped tokens, per variant [V].

        Needs `reference()` and `ref_logp()` of the same sequence first.
        """
        hidden_VTD = self.run_from(start, mult_VC, add_VC, mlp_start)
        device = hidden_VTD.device
        kl_sum_V = torch.zeros(len(hidden_VTD), dtype=torch.float64, device=device)
        for t in range(0, hidden_VTD.shape[1], logit_chunk):
            sl = slice(t, t + logit_chunk)
            kl_VT = token_kl(self.ref_logp_TX[sl], self.log_probs(hidden_VTD[:, sl]))
            kl_sum_V += (kl_VT * scope_T[sl]).sum(-1).double()
        # Divided on the device: no host sync per batch of variants.
        return kl_sum_V / scope_T.sum().clamp_min(1)

    @torch.no_grad()
    def ref_logp(self, logit_chunk: int = 512) -> None:
        """Keep the reference next-token log-probs [T, X] of the last reference()."""
        final_TD = self.final[0]
        self.ref_logp_TX = torch.cat(
            [
                self.log_probs(final_TD[t : t + logit_chunk])
                for t in range(0, len(final_TD), logit_chunk)
            ]
        )

    def log_probs(self, hidden_VTD: torch.Tensor) -> torch.Tensor:
        return log_softmax(self.lm_head(self.norm(hidden_VTD)))


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Log-probs in at least float32 (bf16 logits would lose the small KLs)."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return F.log_softmax(logits.to(dtype), -1)


def token_kl(ref_logp_TX: torch.Tensor, logq_VTX: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per token [V, T]; X = vocabulary."""
    kl_VT = (ref_logp_TX.exp() * (ref_logp_TX - logq_VTX)).sum(-1)
    # Exact KL is >= 0; rounding can leave values like -1e-9 when p == q.
    return kl_VT.clamp_min(0.0)


@torch.no_grad()
def ablation_kl(
    peft_model: nn.Module,
    control: ScalarControl,
    ablations: list[Ablation],
    sequences: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    variants_per_forward: int = 8,
    logit_chunk: int = 512,
    prefix_reuse: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean KL per ablation and sequence.

    `sequences` are (input_ids [T], scope [T] bool: positions whose next-token
    distribution counts). Returns kl_AS [ablations, sequences], tokens_S
    (counted positions) and mean |scalar| per component over counted positions,
    mean_abs_C, taken from the unablated passes.
    """
    runner = PrefixRunner(peft_model, control)
    device = next(peft_model.parameters()).device
    kl_AS = np.zeros((len(ablations), len(sequences)))
    tokens_S = np.zeros(len(sequences), dtype=np.int64)
    abs_sum_C = torch.zeros(control.n_components, dtype=torch.float64)
    # Batch ablations with the same start point; without reuse all start at 0.
    start_of = {
        a: (ab.start_layer, ab.mlp_start and runner.split) if prefix_reuse else (0, 0)
        for a, ab in enumerate(ablations)
    }
    for s, (ids_T, scope_T) in enumerate(sequences):
        scope_T = scope_T.to(device)
        scalars_TC = runner.reference(ids_T[None].to(device))
        abs_sum_C += scalars_TC[scope_T].abs().sum(0).double().cpu()
        tokens_S[s] = int(scope_T.sum())
        runner.ref_logp(logit_chunk)
        for start, mlp_start in sorted(set(start_of.values())):
            group = [a for a in start_of if start_of[a] == (start, mlp_start)]
            for b in range(0, len(group), variants_per_forward):
                batch = group[b : b + variants_per_forward]
                mask_VC = np.stack([ablations[a].mask_C for a in batch])
                mult_VC = torch.from_numpy(~mask_VC).to(device, torch.float32)
                kl_V = runner.mean_kl(
                    start, scope_T, mult_VC, None, logit_chunk, bool(mlp_start)
                )
                kl_AS[batch, s] = kl_V.cpu().numpy()
    mean_abs_C = (abs_sum_C / max(tokens_S.sum(), 1)).numpy()
    return kl_AS, tokens_S, mean_abs_C


@torch.no_grad()
def naive_ablation_kl(
    peft_model: nn.Module,
    lora_layers: list[nn.Module],
    ablations: list[Ablation],
    sequences: list[tuple[torch.Tensor, torch.Tensor]],
) -> np.ndarray:
    """Reference: zero lora_B columns, full forward per ablation. kl_AS."""
    device = next(peft_model.parameters()).device
    kl_AS = np.zeros((len(ablations), len(sequences)))
    for s, (ids_T, scope_T) in enumerate(sequences):
        ids_1T, scope_T = ids_T[None].to(device), scope_T.to(device)
        logits = peft_model(input_ids=ids_1T, use_cache=False).logits
        ref_logp_TX = log_softmax(logits[0])
        for a, ablation in enumerate(ablations):
            with zeroed_lora_b(lora_layers, torch.from_numpy(ablation.mask_C)):
                logits = peft_model(input_ids=ids_1T, use_cache=False).logits
            kl_T = token_kl(ref_logp_TX, log_softmax(logits))[0]
            kl_AS[a, s] = float((kl_T * scope_T).sum() / max(int(scope_T.sum()), 1))
    return kl_AS
