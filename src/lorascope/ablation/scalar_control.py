"""Edit rank-1 LoRA scalars inside the forward, per batch row (ablation, steering).

Used by the `kl_ablation` and `steering_sweep` rules (via `lorascope.ablation.kl`
and `lorascope.steering.sweep`). A component's scalar is the output of its `lora_A`
(before scaling and `lora_B`), so a wrapper of each `lora_A`'s forward can rewrite it
as ``scalar * mult[v, c] + add[v, c]`` for batch row ``v``. Ablation sets
``mult`` to 0 for the chosen components; steering adds to ``add``. No weight
is touched, so many variants share one batched forward.

`zeroed_lora_b` (weight editing) exists only as the naive reference that tests
and the benchmark compare the scalar edits against.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lorascope.core.lean_lora import wrap_output

__all__ = ["ScalarControl", "check_table", "lora_layers", "zeroed_lora_b"]


def _adapter_name(layer: nn.Module) -> str:
    names = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(names) != 1:
        raise ValueError(
            f"expected exactly one active LoRA adapter on {type(layer).__name__}, "
            f"found {names}"
        )
    return names[0]


def lora_layers(peft_model: nn.Module) -> list[nn.Module]:
    """PEFT LoRA layers in components.parquet order (from the spine)."""
    from lorascope.core.components import lora_modules

    return [module for _, module in lora_modules(peft_model)]


def check_table(table, peft_model: nn.Module) -> None:
    """Fail naming the first row where components.parquet and the model disagree.

    Masks and shifts are laid out in table order, so a stale table would edit
    the wrong components silently.
    """
    from lorascope.core.components import lora_modules, table_from_modules

    cols = ["index", "layer", "module", "rank_slot", "name"]
    want = table_from_modules([m for m, _ in lora_modules(peft_model)]).select(cols)
    got = table.select(cols)
    if got.height != want.height:
        raise ValueError(
            f"components.parquet has {got.height} rows, the adapter {want.height}"
        )
    for row in range(got.height):  # same height, checked above
        a, b = got.row(row), want.row(row)
        if a != b:
            raise ValueError(
                f"components.parquet row {row} is {a}, the adapter has {b}"
            )


class ScalarControl:
    """Hooks every LoRA `lora_A` so its scalars can be scaled, shifted or recorded.

    `layers` are PEFT LoRA layers in component-table order; a layer of rank r
    owns r consecutive components (rank slots). Set `mult_VC` / `add_VC`
    (V = 1 or the batch size, C = number of components) before a forward;
    `None` leaves the scalars untouched. With `record = True` each forward
    stores the (edited) scalars, readable as `recorded()` -> [B, T, C].
    """

    def __init__(self, layers: Sequence[nn.Module]):
        self._edits: dict[str, torch.Tensor | None] = {}  # set just below
        self.mult_VC: torch.Tensor | None = None
        self.add_VC: torch.Tensor | None = None
        self.add_mask_T: torch.Tensor | None = None
        """Positions `add_VC` applies to (bool [T] of the forward); None = all."""
        self.set_VTC: torch.Tensor | None = None
        """Replacement scalars per row and position (feature ablation); applied
        before mult/add; None = keep the computed scalars."""
        self.record = False
        self._records: list[torch.Tensor | None] = [None] * len(layers)
        self._restore = []
        start = 0
        for i, layer in enumerate(layers):
            lora_a = layer.lora_A[_adapter_name(layer)]
            rank = lora_a.out_features
            self._restore.append(wrap_output(lora_a, self._edit(i, start, rank)))
            start += rank
        self.n_components = start

    # mult_VC / add_VC may be set from anywhere (numpy on the host, a config);
    # every hook mixes them in on the activation's own device and dtype, each
    # moved once per forward setting, not once per layer (tests/unit/test_devices.py).
    # Setting an edit drops the device copies of the old one. (Methods, not
    # properties built by a helper at import: mutation testing can then
    # change them, tests/support/mutation.py.)
    @property
    def mult_VC(self) -> torch.Tensor | None:
        return self._edits["mult"]

    @mult_VC.setter
    def mult_VC(self, value: torch.Tensor | None) -> None:
        self._set("mult", value)

    @property
    def add_VC(self) -> torch.Tensor | None:
        return self._edits["add"]

    @add_VC.setter
    def add_VC(self, value: torch.Tensor | None) -> None:
        self._set("add", value)

    @property
    def set_VTC(self) -> torch.Tensor | None:
        return self._edits["set"]

    @set_VTC.setter
    def set_VTC(self, value: torch.Tensor | None) -> None:
        self._set("set", value)

    def _set(self, name: str, value: torch.Tensor | None) -> None:
        self._edits[name] = value
        self._moved: dict[tuple, torch.Tensor] = {}

    def _edit_like(self, name: str, out: torch.Tensor) -> torch.Tensor | None:
        """The edit `name` on `out`'s device and dtype (cached per pair)."""
        value = self._edits[name]
        if value is None:
            return None
        key = (name, out.device, out.dtype)
        if key not in self._moved:
            self._moved[key] = value.to(device=out.device, dtype=out.dtype)
        return self._moved[key]

    def _edit(self, i: int, start: int, rank: int):
        cols = slice(start, start + rank)

        def edit(out_BTR: torch.Tensor) -> torch.Tensor:
            set_VTC = self._edit_like("set", out_BTR)
            if set_VTC is not None:
                out_BTR = set_VTC[:, :, cols].expand_as(out_BTR)
            mult_VC = self._edit_like("mult", out_BTR)
            if mult_VC is not None:
                out_BTR = out_BTR * mult_VC[:, None, cols]
            add_VC = self._edit_like("add", out_BTR)
            if add_VC is not None:
                add_VTR = add_VC[:, None, cols]
                if self.add_mask_T is not None:
                    mask_T = self.add_mask_T.to(
                        device=out_BTR.device, dtype=out_BTR.dtype
                    )
                    add_VTR = add_VTR * mask_T[None, :, None]
                out_BTR = out_BTR + add_VTR
            if self.record:
                self._records[i] = out_BTR.detach()
            return out_BTR

        return edit

    def recorded(self) -> torch.Tensor:
        """Scalars of the last forward, [B, T, C] in component order."""
        if any(r is None for r in self._records):
            raise RuntimeError("no recorded forward: set record = True first")
        return torch.cat(self._records, dim=-1)

    def clear(self) -> None:
        self.mult_VC = self.add_VC = self.add_mask_T = self.set_VTC = None
        self.record = False
        self._records = [None] * len(self._records)

    def remove(self) -> None:
        """Put every lora_A's previous forward back (once)."""
        for restore in reversed(self._restore):
            restore()
        self._restore = []

    def __enter__(self) -> ScalarControl:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@contextlib.contextmanager
def zeroed_lora_b(
    layers: Sequence[nn.Module], ablate_C: torch.Tensor
) -> Iterator[None]:
    """Temporarily zero the `lora_B` columns of the ablated components (naive way)."""
    total = sum(layer.lora_B[_adapter_name(layer)].in_features for layer in layers)
    if total != len(ablate_C):
        raise ValueError(f"mask has {len(ablate_C)} entries for {total} components")
    saved = []
    start = 0
    with torch.no_grad():
        for layer in layers:
            lora_b = layer.lora_B[_adapter_name(layer)]
            rank = lora_b.in_features
            slots = torch.nonzero(ablate_C[start : start + rank]).flatten()
            if len(slots):
                saved.append((lora_b, lora_b.weight.detach().clone()))
                lora_b.weight[:, slots] = 0
            start += rank
    try:
        yield
    finally:
        with torch.no_grad():
            for lora_b, weight in saved:
                lora_b.weight.copy_(weight)
