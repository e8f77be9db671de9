"""One pass of base + LoRA over the SFT set: every component's scalar per token.

Used by rule `extract_activations` (and, for MLP context windows, rule
`mlp_features`). The scalar of a LoRA component is `x @ lora_A.T` for the
input x of the adapted matrix, before scaling and before lora_B (paper §2):
each `lora_A` Linear writes it into one preallocated `[B, L, C]` buffer on
the device, in the component table's column order.

The MLP baseline records the first N hidden units of every layer's MLP:
`act_gate_up` (default) = act(gate(x)) * up(x), the input to down_proj;
`up_proj` = up_proj's output channels (what the paper's public code read).
With the LoRA off (default for act_gate_up) they come from a second,
base-model pass; with it on (default for up_proj, as the public code ran),
from the same pass as the LoRA scalars.

Only the decoder runs (no lm_head): the vocab projection would cost a
`[T, vocab]` logits tensor per batch for nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

import torch

from lorascope.core.components import component_label, lora_modules
from lorascope.core.lean_lora import wrap_output

log = logging.getLogger(__name__)

__all__ = [
    "ExtractError",
    "LoraCapture",
    "MlpCapture",
    "make_batches",
    "pad_batch",
    "forward_batch",
    "iter_doc_values",
    "mlp_doc_values",
    "MLP_TENSORS",
    "mlp_lora_on",
]

MLP_TENSORS = ("act_gate_up", "up_proj")


class ExtractError(RuntimeError):
    """The model cannot be measured the way the config asks."""


def _backbone(model):
    """The decoder stack of a (PEFT-wrapped) causal LM: hidden states, no logits."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else base


class LoraCapture:
    """Every lora_A writes `x @ A.T` into `buf[..., cols]` as it runs.

    Not a forward hook (`lorascope.core.lean_lora.wrap_output` says why):
    each lora_A's forward is wrapped to copy its output; `remove` restores it.
    """

    def __init__(self, peft_model, adapter: str = "default"):
        pairs = lora_modules(peft_model, adapter)
        self.modules, self.slices, self.columns = [], [], []
        col = 0
        for info, layer in pairs:
            if adapter in getattr(layer, "lora_variant", {}):
                raise ExtractError(
                    f"{info.name}: LoRA variant (e.g. DoRA) has no plain scalar"
                )
            if getattr(layer, "merged", False):
                raise ExtractError(f"{info.name}: adapter is merged; unmerge first")
            self.modules.append(layer.lora_A[adapter])
            self.slices.append(slice(col, col + info.rank))
            self.columns += [
                component_label(info.layer, info.module, s, info.rank)
                for s in range(info.rank)
            ]
            col += info.rank
        self.n_components = col
        self.buf = None
        self.calls = [0] * len(self.modules)
        self._restore = [self._install(i, m) for i, m in enumerate(self.modules)]

    def _install(self, i: int, module) -> Callable[[], None]:
        """Copy `module`'s output into the buffer while recording; returns
        what puts its previous forward back."""
        cols = self.slices[i]

        def record(out_BLr: torch.Tensor) -> torch.Tensor:
            if self.buf is not None:
                self.buf[..., cols].copy_(out_BLr)
                self.calls[i] += 1
            return out_BLr

        return wrap_output(module, record)

    @contextlib.contextmanager
    def recording(self, buf_BLC: torch.Tensor) -> Iterator[torch.Tensor]:
        self.buf, self.calls = buf_BLC, [0] * len(self.modules)
        try:
            yield buf_BLC
        finally:
            self.buf = None
        if any(c != 1 for c in self.calls):
            bad = [
                self.columns[s.start]
                for s, c in zip(self.slices, self.calls, strict=True)
                if c != 1
            ]
            raise ExtractError(f"LoRA modules not run exactly once: {bad[:8]}")

    def remove(self) -> None:
        """Put every lora_A's previous forward back (once)."""
        for restore in reversed(self._restore):
            restore()
        self._restore = []


def mlp_lora_on(tensor: str, lora: bool | None) -> bool:
    """`activations.mlp_lora`; null = off for act_gate_up, on for up_proj."""
    return (tensor == "up_proj") if lora is None else bool(lora)


class MlpCapture:
    """Hooks recording the first `n_neurons` MLP hidden units of every layer."""

    def __init__(
        self,
        model,
        n_neurons: int,
        tensor: str = "act_gate_up",
        lora: bool | None = None,
    ):
        if tensor not in MLP_TENSORS:
            raise ExtractError(f"mlp_tensor must be one of {MLP_TENSORS}: {tensor!r}")
        target = "down_proj" if tensor == "act_gate_up" else "up_proj"
        layers = _backbone(model).layers
        self.tensor, self.n_neurons, self.n_layers = tensor, n_neurons, len(layers)
        # LoRA on = recorded in the LoRA pass; off = a base-model pass.
        self.lora = mlp_lora_on(tensor, lora)
        self.n_units = n_neurons * len(layers)
        self.buf = None
        self.handles = []
        for i, layer in enumerate(layers):
            mod = getattr(layer.mlp, target)
            width = mod.in_features if target == "down_proj" else mod.out_features
            if n_neurons > width:
                raise ExtractError(
                    f"activations.mlp_neurons_per_layer={n_neurons} exceeds layer "
                    f"{i}'s MLP width {width}"
                )
            cols = slice(i * n_neurons, (i + 1) * n_neurons)
            if target == "down_proj":  # its input is act(gate) * up
                hook = mod.register_forward_pre_hook(self._pre_hook(cols))
            else:
                hook = mod.register_forward_hook(self._post_hook(cols))
            self.handles.append(hook)

    def _pre_hook(self, cols: slice):
        def hook(_module, inputs):
            if self.buf is not None:
                self.buf[..., cols].copy_(inputs[0][..., : self.n_neurons])

        return hook

    def _post_hook(self, cols: slice):
        def hook(_module, _inputs, out):
            if self.buf is not None:
                self.buf[..., cols].copy_(out[..., : self.n_neurons])

        return hook

    @contextlib.contextmanager
    def recording(self, buf_BLU: torch.Tensor) -> Iterator[torch.Tensor]:
        self.buf = buf_BLU
        try:
            yield buf_BLU
        finally:
            self.buf = None

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def make_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Group sequence indices (longest first) so that B x max_len <= batch_tokens.

    Sorting by length keeps padding small; a sequence longer than the budget
    runs alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, cur = [], []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]  # longest comes first
        if cur and (len(cur) + 1) * width > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def pad_batch(seqs: Sequence[Sequence[int]], device) -> tuple[torch.Tensor, ...]:
    """Right-padded `ids [B, L]` and `mask [B, L]` (causal: padding never leaks)."""
    L = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), L, dtype=torch.long)
    mask = torch.zeros(len(seqs), L, dtype=torch.bool)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[b, : len(s)] = True
    return ids.to(device), mask.to(device)


def forward_batch(
    model,
    ids_BL: torch.Tensor,
    mask_BL: torch.Tensor,
    lora: LoraCapture | None,
    mlp: MlpCapture | None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Run the batch; return `lora [T, C]` and `mlp [T, U]` (`dtype`, on device).

    T = the batch's real tokens, sequence by sequence (padding dropped).
    """
    # In the body, not as a decorator: mutmut 3 skips decorated functions
    # (docs/development.md, mutation testing).
    with torch.no_grad():
        B, L = ids_BL.shape
        dev = ids_BL.device
        backbone = _backbone(model)
        kw = dict(input_ids=ids_BL, attention_mask=mask_BL.long(), use_cache=False)
        keep = mask_BL.flatten().nonzero().squeeze(1)  # (T,)
        buf = dict(device=dev, dtype=dtype)
        lora_buf = torch.empty(B, L, lora.n_components, **buf) if lora else None
        mlp_buf = torch.empty(B, L, mlp.n_units, **buf) if mlp else None
        same_pass = mlp is not None and mlp.lora
        if lora is not None or same_pass:
            with contextlib.ExitStack() as stack:
                if lora is not None:
                    stack.enter_context(lora.recording(lora_buf))
                if same_pass:
                    stack.enter_context(mlp.recording(mlp_buf))
                backbone(**kw)
        if mlp is not None and not same_pass:
            # The baseline is the base model's MLP: LoRA off for this pass.
            with model.disable_adapter(), mlp.recording(mlp_buf):
                backbone(**kw)
        flat = lambda buf: buf.view(B * L, -1).index_select(0, keep)  # noqa: E731
        return (
            flat(lora_buf) if lora is not None else None,
            flat(mlp_buf) if mlp is not None else None,
        )


def iter_doc_values(
    token_ids: dict[int, Sequence[int]],
    batch_tokens: int,
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(doc, values [T_doc, U] on CPU) for each doc, batched by token budget.

    `run(ids_BL, mask_BL)` returns `[T, U]` for the batch's real tokens (e.g.
    `lambda i, m: forward_batch(model, i, m, None, mlp)[1]`); used to rebuild
    MLP activations around top-k tokens without having stored them.
    """
    docs = list(token_ids)
    lengths = [len(token_ids[d]) for d in docs]
    for batch in make_batches(lengths, batch_tokens):
        ids, mask = pad_batch([token_ids[docs[i]] for i in batch], device)
        values = run(ids, mask).float().cpu()
        start = 0
        for i in batch:
            yield docs[i], values[start : start + lengths[i]]
            start += lengths[i]


def mlp_doc_values(model, mlp: MlpCapture, token_ids, batch_tokens: int, device):
    """A `doc_values` for `contexts.build_contexts`: recompute the MLP units of
    the docs asked for (they were streamed into top-k, never stored)."""

    def run(ids_BL, mask_BL):
        return forward_batch(model, ids_BL, mask_BL, None, mlp)[1]

    def doc_values(docs):
        sub = {d: token_ids[d] for d in docs}
        return iter_doc_values(sub, batch_tokens, run, device)

    return doc_values
