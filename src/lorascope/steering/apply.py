"""Switching a steering shift on during generation (rule `steering_sweep`).

`applied` sets a target's scalar shift (and residual shift) for the forwards
of a `generate` call: at every position (`steering.positions: all`), or only
at positions whose input token was generated (`generated`): a pre-hook on the
decoder switches the shift off for the prompt's forward (an empty KV cache)
and on for every later step (the first generated token comes from the
unsteered prompt pass, as in the public lora_A steering script).
`steered` is the plain all-positions context on the scalars alone.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from lorascope.ablation.scalar_control import ScalarControl
from lorascope.steering.residual import ResidualShift

__all__ = ["POSITIONS", "applied", "steered"]

POSITIONS = ("all", "generated")


class steered:
    """Context: every forward adds alpha x delta_C to the scalars (generation)."""

    def __init__(self, control: ScalarControl, delta_C: np.ndarray, alpha: float):
        self.control = control
        self.add_1C = torch.as_tensor(alpha * delta_C, dtype=torch.float32)[None]

    def __enter__(self) -> steered:
        self.control.clear()
        self.control.add_VC = self.add_1C
        return self

    def __exit__(self, *exc) -> None:
        self.control.clear()


def _extends_cache(kwargs: dict) -> bool:
    """True for a forward that appends to a filled KV cache (a decode step)."""
    past = kwargs.get("past_key_values")
    return past is not None and past.get_seq_length() > 0


@contextlib.contextmanager
def applied(
    model,
    control: ScalarControl,
    delta_C: np.ndarray,
    alpha: float,
    positions: str = "all",
    shift: ResidualShift | None = None,
):
    """Generation context: alpha x delta_C on the scalars (and alpha x the
    residual `shift`), at every position or only at generated ones."""
    if positions not in POSITIONS:
        raise ValueError(f"steering.positions: {positions!r} not in {POSITIONS}")
    add_1C = torch.as_tensor(alpha * delta_C, dtype=torch.float32)[None]
    scale_1 = torch.tensor([float(alpha)])

    def switch(on: bool) -> None:
        control.add_VC = add_1C if on else None
        if shift is not None:
            shift.scale_V = scale_1 if on else None

    control.clear()
    handle = None
    if positions == "generated":
        decoder = model.get_base_model().get_decoder()
        handle = decoder.register_forward_pre_hook(
            lambda _m, _args, kwargs: switch(_extends_cache(kwargs)),
            with_kwargs=True,
        )
    switch(positions == "all")
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()
        switch(False)
        control.clear()
