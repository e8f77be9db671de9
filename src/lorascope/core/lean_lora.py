"""A leaner forward for PEFT's LoRA Linear layers, with the same arithmetic.

PEFT's `lora.Linear.forward` handles every case (mixed adapter batches,
variants such as DoRA, dtype casts, merging, dropout), and on a small model
that bookkeeping is a large share of a forward: on the toy, a greedy
generation through a rank-1 LoRA spends about a third of its time inside
the LoRA wrappers, most of it outside the matrix products. For the case
every analysis here runs (one plain adapter, not merged, no dropout at work,
matching dtypes) the layer computes

    base_layer(x) + lora_B(lora_A(x)) * scaling

which is what PEFT computes in that case, operation for operation, so the
results are bit-identical (tests/unit/test_lean_lora.py). Each call checks
the case first and hands anything else to PEFT's own forward. The submodules
are called as modules, so hooks and instance forwards on `lora_A` (the
scalar edits of `lorascope.ablation.scalar_control`, the capture of
`lorascope.activations.hooks`) still run.

`load_lora_model` installs it on every model it loads; training (TRL)
keeps PEFT's forward.

`wrap_output` is the hook-free way to read or edit a submodule's output
(`lora_A`'s scalars): any forward hook sends every call of a module through
torch's slower hook path, which cost 5-10% of the toy's forward
(bench/bench_extract.py).
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["install_lean_forwards", "wrap_output"]


def _lean_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A LoRA Linear's forward: the plain case here, anything else PEFT's.
    (Bound to the layer as a method, so a deep copy of the model rebinds it
    to the copy.)"""
    active = self.active_adapters
    adapter = active[0] if len(active) == 1 else None
    plain = (
        adapter in self.lora_A
        and adapter not in self.lora_variant
        and not args
        and not kwargs
        and not self.disable_adapters
        and not self.merged
        and x.dtype == self.lora_A[adapter].weight.dtype
    )
    if plain:
        dropout = self.lora_dropout[adapter]
        plain = isinstance(dropout, nn.Identity) or not dropout.training
    if not plain:
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    lora = self.lora_B[adapter](self.lora_A[adapter](x))
    return (result + lora * self.scaling[adapter]).to(result.dtype)


def install_lean_forwards(peft_model: nn.Module) -> Callable[[], None]:
    """Give every LoRA Linear of `peft_model` the lean forward (which hands
    what is not the plain case to PEFT's, call by call); returns what puts
    PEFT's back."""
    from peft.tuners.lora import Linear

    patched = []
    for module in peft_model.modules():
        if type(module) is Linear and "forward" not in module.__dict__:
            module.forward = types.MethodType(_lean_forward, module)
            patched.append(module)

    def restore() -> None:
        for module in patched:
            module.__dict__.pop("forward", None)

    return restore


def wrap_output(
    module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[], None]:
    """Send `module`'s output through `fn` by wrapping its forward (the
    class's, or an earlier wrapper's); returns what puts the previous one back."""
    had = "forward" in module.__dict__
    previous = module.__dict__.get("forward")
    inner = module.forward

    def forward(x, *args, **kwargs):
        return fn(inner(x, *args, **kwargs))

    module.forward = forward

    def restore() -> None:
        if had:
            module.forward = previous
        else:
            del module.forward

    return restore
