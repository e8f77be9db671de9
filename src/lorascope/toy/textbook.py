"""Textbook worked solutions: the toy base model's pretraining prose.

Used by ``lorascope.toy.pretrain`` (the document stream) and
``lorascope.toy.tokenizer`` (the text its vocabulary is learnt from). A worked
solution does the same column addition as an SFT trace, in one of several
wordings drawn per document, so the algorithm is not tied to one surface form
or to fixed token positions. Some solutions slip and correct themselves
with one of several phrases ("Wait,", "Hmm, no.", ...): backtracking is in the
base model's pretraining, and the reasoning fine-tune only has to make it the
trace's habit, as the paper argues for real models.
"""

from __future__ import annotations

import random

from lorascope.toy.tasks import choose_slip, column_states, slip_values

__all__ = ["CORRECTIONS", "textbook_text"]

_INTROS = (
    "Example: add {a} and {b}.",
    "Problem. Find {a} + {b}.",
    "Let us work out {a}+{b} column by column.",
    "Exercise {k}: {a} plus {b}",
    "Q: {a} + {b} = ?",
    "We add {b} to {a}.",
    "Sum of {a} and {b}, step by step:",
)
# Each wording is written in full for a complete column line; a slipped line
# is its text up to the (wrong) total {t}.
_LINES = (
    "{x}+{y}+{c}={t} carry {o}, digits {s}, rest {r}",
    "{x} plus {y} plus carry {c} is {t}; carry {o}; so far {s}; left {r}.",
    "column {i}: {x} + {y} + {c} = {t}, carry {o}, partial {s}, remaining {r}",
    "add {x}, {y} and {c}: {t}. Carry {o}. Written: {s}. Still to add: {r}",
    "{x} and {y} with carry {c} make {t}: carry {o}, got {s}, then {r}",
)
_ENDS = (
    "So the answer is {s}.",
    "Therefore {a}+{b}={s}.",
    "Result: {s}",
    "The sum is {s}.",
    "result {s}",
)
CORRECTIONS = ("Wait, ", "Hmm, no. ", "Oops, ", "No wait, ", "Correction: ")


def textbook_text(
    a: int,
    b: int,
    rng: random.Random,
    slip_rate: float = 0.0,
    carry_slip_rate: float = 0.0,
) -> str:
    """A worked solution of ``a + b`` in a randomly drawn textbook wording.

    The wording (intro, line style, separator, ending, correction phrase) is
    drawn per example; with one fixed template the trial's fine-tune did not
    transfer. Slips follow ``tasks.choose_slip`` with the rates given here.
    """
    line = rng.choice(_LINES)
    head = line[: line.index("{t}") + len("{t}")]
    sep = rng.choice(("\n", "\n", "; "))
    states = column_states(a, b)
    slip = choose_slip([s for s, _, _ in states], rng, slip_rate, carry_slip_rate)
    body = []
    for i, (s, digits, rest) in enumerate(states):
        fields = dict(
            x=s.x,
            y=s.y,
            c=s.carry_in,
            t=s.total,
            o=s.carry_out,
            s=digits,
            i=i + 1,
            r=rest or "nothing",
        )
        if slip is not None and i == slip[0]:
            c, t = slip_values(s, slip[1], rng)
            body.append(head.format(**{**fields, "c": c, "t": t}))
            body.append(rng.choice(CORRECTIONS) + line.format(**fields))
        else:
            body.append(line.format(**fields))
    intro = rng.choice(_INTROS).format(a=a, b=b, k=rng.randint(1, 99))
    end = rng.choice(_ENDS).format(a=a, b=b, s=a + b)
    return intro + "\n" + sep.join(body) + "\n" + end
