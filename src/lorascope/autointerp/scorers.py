"""Fuzzing and simulation scores for explanations (rule autointerp_score),
following EleutherAI delphi 0.1.3's definitions (docs/ground-truth.md).

Both score a feature's score split (`split.py`), never the contexts its
explanation was written from, each window cut to the scorer's `window`
tokens either side of its centre (null: the explainer's `example_window`).

- Fuzzing (delphi `scorers/classifier/fuzz.py`, fuzz_type "active"): the
  first `fuzzing.n_examples` held-out windows, alternately shown with their
  truly active tokens marked (activation >= `threshold` x the window's
  largest) and as decoys with as many random inactive tokens marked (the
  mean active count over the true ones, rounded up). The judge says which
  windows have every marked token covered by the explanation; balanced
  accuracy over true and decoy windows.
- Simulation (delphi `scorers/simulator/`): the judge predicts 0-10 per
  token of the first `simulation.n_contexts` held-out windows from the
  explanation; score = Pearson correlation of predicted with true
  activations (clipped at 0: a feature's activating side) over all their
  tokens concatenated (delphi's aggregate). Constant predictions or truth
  leave it undefined (status `undefined`), never 0.

Each scorer is an object the providers' `judge` reads: `template`, the
offline prediction `offline(explanation, payload)` (from the explanation's
tokens, as `offline.judge_offline`), the LLM prompt `prompt(template,
explanation, payload)` and the reply parser `parser(payload)`. A malformed
reply is a failed feature (status `failed`, the raw reply kept).
"""

from __future__ import annotations

import math

import numpy as np

from lorascope.autointerp.explain import trim_window
from lorascope.autointerp.offline import judge_offline
from lorascope.autointerp.prompts import (
    format_highlighted,
    format_token_lists,
    parse_numbers,
    parse_simulation,
    render,
)

__all__ = [
    "FUZZING",
    "SIMULATION",
    "active_positions",
    "correlation",
    "fuzz_windows",
    "simulation_windows",
]


def active_positions(acts, threshold: float) -> list[int]:
    """Positions at or above `threshold` x the window's largest activation
    (delphi's `_prepare_text`), only where that largest is positive."""
    a = np.asarray(acts, dtype=np.float64)
    top = float(a.max()) if len(a) else 0.0
    return [] if top <= 0 else [int(i) for i in np.flatnonzero(a >= threshold * top)]


def fuzz_windows(held: list[dict], cfg: dict, window, seed: int, fid: int):
    """Shuffled [{tokens, marked, label}] for one feature (seeded per feature).

    `held` is the score split in its quantile-spread order: even places are
    shown truly marked, odd places as decoys, so both span the quantiles.
    A decoy window with no inactive token to mark is left out."""
    ctxs = [trim_window(c, window) for c in held[: cfg["n_examples"]]]
    rng = np.random.default_rng([seed, fid, 3])
    true = [
        {"tokens": list(c["tokens"]), "label": True,
         "marked": active_positions(c["acts"], cfg["threshold"])}
        for c in ctxs[0::2]
    ]  # fmt: skip
    n_mark = math.ceil(np.mean([len(t["marked"]) for t in true])) if true else 1
    out = list(true)
    for c in ctxs[1::2]:
        active = set(active_positions(c["acts"], cfg["threshold"]))
        idle = [i for i in range(len(c["tokens"])) if i not in active]
        if idle:
            pick = rng.choice(idle, size=min(n_mark, len(idle)), replace=False)
            out.append(
                {"tokens": list(c["tokens"]), "label": False,
                 "marked": sorted(int(i) for i in pick)}
            )  # fmt: skip
    return [out[i] for i in rng.permutation(len(out))]


def simulation_windows(held: list[dict], cfg: dict, window) -> list[dict]:
    """[{tokens, acts}] of the first `n_contexts` held-out windows, true
    activations clipped at 0."""
    return [
        {"tokens": list(c["tokens"]),
         "acts": np.clip(np.asarray(c["acts"], np.float64), 0, None).tolist()}
        for c in (trim_window(c, window) for c in held[: cfg["n_contexts"]])
    ]  # fmt: skip


def correlation(truth, predicted) -> float | None:
    """Pearson r over the concatenated windows; None when either is constant."""
    t = np.concatenate([np.asarray(x, np.float64) for x in truth])
    p = np.concatenate([np.asarray(x, np.float64) for x in predicted])
    if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return None
    return float(np.corrcoef(t, p)[0, 1])


class _Fuzzing:
    template = "fuzz"

    @staticmethod
    def offline(explanation: str, windows: list[dict]) -> list[bool]:
        """A window is judged correctly marked when the offline judge accepts
        every marked token (delphi: correct only if every marked token is)."""
        return [
            all(judge_offline(explanation, [w["tokens"][i] for i in w["marked"]]))
            for w in windows
        ]

    @staticmethod
    def prompt(template, explanation: str, windows: list[dict]) -> str:
        listing = "\n".join(
            f"{k + 1}. {format_highlighted(w['tokens'], w['marked'])}"
            for k, w in enumerate(windows)
        )
        return render(template, explanation=explanation, examples=listing,
                      n=len(windows))  # fmt: skip

    @staticmethod
    def parser(windows: list[dict]):
        return parse_numbers(len(windows), "correct")


class _Simulation:
    template = "simulate"

    @staticmethod
    def offline(explanation: str, windows: list[dict]) -> list[list[float]]:
        """10 on each token the offline judge says the explanation names, else 0."""
        return [
            [10.0 if hit else 0.0 for hit in judge_offline(explanation, w["tokens"])]
            for w in windows
        ]

    @staticmethod
    def prompt(template, explanation: str, windows: list[dict]) -> str:
        listing = format_token_lists([w["tokens"] for w in windows])
        return render(template, explanation=explanation, windows=listing,
                      n=len(windows))  # fmt: skip

    @staticmethod
    def parser(windows: list[dict]):
        return parse_simulation([len(w["tokens"]) for w in windows])


FUZZING, SIMULATION = _Fuzzing(), _Simulation()
