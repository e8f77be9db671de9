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
from collections.abc import Sequence

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
    alpha: float | Sequence[float],
    positions: str = "all",
    shift: ResidualShift | None = None,
):
    """Generation context: alpha x delta_C on the scalars (and alpha x the
    residual `shift`), at every position or only at generated ones.

    `alpha` is one value for every row, or one per prompt (several
    strengths in one generate call): then the context yields the
    `on_batch` to pass to `generate_hf`, which sets each call's rows."""
    if positions not in POSITIONS:
        raise ValueError(f"steering.positions: {positions!r} not in {POSITIONS}")
    alpha_R = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
    rows = {}  # the shifts of the rows of the generate call under way

    def select(alpha_V: np.ndarray) -> None:
        # each row's alpha x delta as numpy computes it for one alpha
        add_VC = np.stack([float(a) * delta_C for a in alpha_V])
        rows["add"] = torch.as_tensor(add_VC, dtype=torch.float32)
        rows["scale"] = torch.as_tensor(alpha_V, dtype=torch.float32)

    select(alpha_R[:1])  # one alpha: the same shift on every row ([1, C])
    on = False

    def switch(state: bool) -> None:
        nonlocal on
        on = state
        control.add_VC = rows["add"] if on else None
        if shift is not None:
            shift.scale_V = rows["scale"] if on else None

    def on_batch(prompts: list[int]) -> None:
        """The strengths of one generate call's rows (prompt indices)."""
        if np.ndim(alpha):
            select(alpha_R[prompts])
            switch(on)

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
        yield on_batch
    finally:
        if handle is not None:
            handle.remove()
        switch(False)
        control.clear()
