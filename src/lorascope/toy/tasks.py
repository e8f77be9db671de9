"""Toy arithmetic task family: SFT traces, benchmarks, direct answers.

Used by the toy rules (``workflow/scripts/toy_sft.py``, ``toy_bench.py``), by
``lorascope.toy.textbook`` and ``lorascope.toy.pretrain``. The task is column
addition of two n-digit numbers. Made here:

- reasoning traces (the SFT set, in the s1K-1.1 columns): one line per column
  with the digit sum, the carry and the running state, some with a slip
  (a forgotten carry or a mis-added column) followed by "Wait," and the
  corrected line, then the result;
- benchmarks (the normalised benchmark schema of docs/ARCHITECTURE.md);
- the direct answers the base "instruct" model learns in pretraining.

Everything is a pure function of its arguments and a ``random.Random``.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

import polars as pl

from lorascope.toy.roles import Span, TraceBuilder

__all__ = [
    "Step",
    "add_steps",
    "attempt_roles",
    "attempt_text",
    "benchmark_frame",
    "benchmark_pairs",
    "choose_slip",
    "column_states",
    "direct_answer",
    "held_out",
    "line_text",
    "question_text",
    "reasoning_trace",
    "reasoning_trace_roles",
    "sample_pair",
    "sft_frame",
    "sft_rows",
    "slip_line",
    "slip_values",
]

# A few question wordings: the chat data, SFT set and benchmarks draw from the
# same pool so no variant is out of distribution for any model.
HELD_OUT_EVERY = 5  # one operand pair in five is held out (see held_out)
QUESTIONS = (
    "What is {a} + {b}?",
    "Compute {a} + {b}.",
    "Find the sum of {a} and {b}.",
)


@dataclass(frozen=True)
class Step:
    """One column of a column addition, ones column first."""

    x: int  # digit of the first operand
    y: int  # digit of the second operand
    carry_in: int
    total: int  # x + y + carry_in
    digit: int  # total % 10, the digit written down
    carry_out: int  # total // 10


def add_steps(a: int, b: int) -> list[Step]:
    """Column steps of ``a + b`` from the ones column up to the longer operand."""
    if a < 0 or b < 0:
        raise ValueError(f"toy addition needs non-negative operands, got {a}, {b}")
    xs, ys = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(xs), len(ys))):
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        total = x + y + carry
        steps.append(Step(x, y, carry, total, total % 10, total // 10))
        carry = total // 10
    return steps


def sample_pair(rng: random.Random, digits: int) -> tuple[int, int]:
    """Two operands with exactly ``digits`` digits each."""
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10**digits - 1
    return rng.randint(lo, hi), rng.randint(lo, hi)


def question_text(a: int, b: int, variant: int = 0) -> str:
    return QUESTIONS[variant % len(QUESTIONS)].format(a=a, b=b)


def attempt_text(a: int, b: int) -> str:
    """The answer section body (after "Answer: "): restated problem, boxed sum.

    Restating the operands matters: with bare numbers the trial's fine-tune
    miscopied operands into its reasoning.
    """
    return f"{a}+{b}=\\boxed{{{a + b}}}"


def direct_answer(a: int, b: int) -> str:
    """What the base "instruct" model is taught to answer: no reasoning."""
    return attempt_text(a, b)


def column_states(a: int, b: int) -> list[tuple[Step, str, str]]:
    """Each step with the sum digits so far and the operands still to add.

    Carrying this state on every line keeps each step local: the next column's
    digits are the last digits of the "rest" on the line above, and the digits
    so far grow by one in front. Tiny models cannot reliably fetch the i-th
    digit from the right of a number written far back in the context.
    """
    out, sa, sb, digits = [], str(a), str(b), ""
    for i, s in enumerate(add_steps(a, b)):
        digits = f"{s.digit}{digits}"
        rest_a, rest_b = sa[: len(sa) - i - 1], sb[: len(sb) - i - 1]
        out.append((s, digits, f"{rest_a}+{rest_b}" if rest_a or rest_b else ""))
    return out


def line_text(s: Step, digits: str, rest: str) -> str:
    """One complete trace line: column sum, carry, digits so far, what is left."""
    line = f"{s.x}+{s.y}+{s.carry_in}={s.total} carry {s.carry_out}, digits {digits}"
    return line + (f", rest {rest}" if rest else "")


def slip_values(s: Step, kind: str, rng: random.Random) -> tuple[int, int]:
    """(carry in, column total) as a slipped line writes them.

    ``carry``: the incoming carry is forgotten (written as 0, the total
    without it); ``total``: the column is mis-added by one or two.
    """
    if kind == "carry":
        return 0, s.x + s.y
    if kind == "total":
        wrong = s.total + rng.choice((-2, -1, 1, 2))
        return s.carry_in, wrong if wrong >= 0 else s.total + 1
    raise ValueError(f"unknown slip kind {kind!r}; expected 'carry' or 'total'")


def slip_line(s: Step, kind: str, rng: random.Random) -> str:
    """The start of a slipped trace line, up to its wrong column total."""
    carry_in, total = slip_values(s, kind, rng)
    return f"{s.x}+{s.y}+{carry_in}={total}"


def choose_slip(
    steps: list[Step], rng: random.Random, slip_rate: float, carry_slip_rate: float
) -> tuple[int, str] | None:
    """Which column slips and how, or None; at most one slip per solution.

    The first column that receives a carry forgets it with probability
    ``carry_slip_rate`` (a slip tied to what is on the page, so a model can
    learn when it happens); otherwise, with probability ``slip_rate``, a
    uniformly drawn column is mis-added (a slip nothing on the page predicts).
    """
    first_carry = next((i for i, s in enumerate(steps) if s.carry_in), None)
    if first_carry is not None and rng.random() < carry_slip_rate:
        return first_carry, "carry"
    if rng.random() < slip_rate:
        return rng.randrange(len(steps)), "total"
    return None


def reasoning_trace(
    a: int,
    b: int,
    rng: random.Random,
    slip_rate: float,
    carry_slip_rate: float = 0.0,
) -> tuple[str, bool]:
    """The think-section text for ``a + b`` and whether it contains a slip.

    One line per column, ones first. A slipped column is first written up to
    a wrong total (see ``choose_slip``), then redone on a line starting with
    "Wait,", so every column still has exactly one complete line.
    """
    text, slipped, _ = reasoning_trace_roles(a, b, rng, slip_rate, carry_slip_rate)
    return text, slipped


def _write_line(tb: TraceBuilder, s: Step, digits: str, rest: str) -> None:
    """``line_text`` piece by piece, with each piece's role."""
    tb.add(str(s.x), "column")
    tb.add("+", "format")
    tb.add(str(s.y), "column")
    tb.add("+", "format")
    tb.add(str(s.carry_in), "carry_in")
    tb.add("=", "format")
    tb.add(str(s.total))
    tb.add(" carry ", "format")
    tb.add(str(s.carry_out), "carry_out")
    tb.add(", digits ", "format")
    tb.add(digits)
    if rest:
        rest_a, rest_b = rest.split("+")
        tb.add(", rest ", "format")
        tb.add(rest_a)
        tb.add("+", "format")
        tb.add(rest_b)


def reasoning_trace_roles(
    a: int,
    b: int,
    rng: random.Random,
    slip_rate: float,
    carry_slip_rate: float = 0.0,
) -> tuple[str, bool, list[Span]]:
    """``reasoning_trace`` plus the role of every character it wrote
    (``lorascope.toy.roles``); draws from ``rng`` exactly as it does."""
    states = column_states(a, b)
    slip = choose_slip([s for s, _, _ in states], rng, slip_rate, carry_slip_rate)
    tb = TraceBuilder()
    tb.add(str(a))
    tb.add("+", "format")
    tb.add(str(b))
    for i, (s, digits, rest) in enumerate(states):
        tb.add("\n", "format")
        if slip is not None and i == slip[0]:
            carry_in, total = slip_values(s, slip[1], rng)  # as slip_line does
            for text, role in (
                (str(s.x), "column"), ("+", "format"), (str(s.y), "column"),
                ("+", "format"), (str(carry_in), "carry_in"), ("=", "format"),
            ):  # fmt: skip
                tb.add(text, role, "slip")
            tb.add(str(total), "slip")
            tb.add("\n", "format")
            tb.add("Wait,", "wait")
            tb.add(" ", "format")
        _write_line(tb, s, digits, rest)
    tb.add("\nresult ", "format")
    tb.add(str(a + b), "answer")
    return tb.text(), slip is not None, tb.spans


def attempt_roles(a: int, b: int) -> tuple[str, list[Span]]:
    """``attempt_text`` with the role of every character."""
    tb = TraceBuilder()
    tb.add(str(a))
    tb.add("+", "format")
    tb.add(str(b))
    tb.add("=\\boxed{", "format")
    tb.add(str(a + b), "answer")
    tb.add("}", "format")
    return tb.text(), tb.spans


def sft_frame(
    n: int,
    digits: list[int],
    seed: int,
    slip_rate: float,
    carry_slip_rate: float = 0.0,
) -> pl.DataFrame:
    """``n`` SFT rows in the s1K-1.1 columns (question, solution, traces).

    Digit counts cycle through ``digits``; pairs in the held-out pool (where
    every benchmark draws from) are never used, so any benchmark, including
    one added later, stays held out without changing the SFT set.
    """
    rows = sft_rows(n, digits, seed, slip_rate, carry_slip_rate)
    return pl.DataFrame([row for row, _, _ in rows])


def sft_rows(
    n: int,
    digits: list[int],
    seed: int,
    slip_rate: float,
    carry_slip_rate: float = 0.0,
) -> list[tuple[dict, list[Span], list[Span]]]:
    """The rows of ``sft_frame`` with the roles of their trace and attempt
    characters (``lorascope.toy.roles``): the generator's own record."""
    if n < 1 or not digits:
        raise ValueError(f"sft_frame needs n >= 1 and digits, got {n}, {digits}")
    rng, rows, seen = random.Random(seed), [], set()
    while len(rows) < n:
        a, b = sample_pair(rng, digits[len(rows) % len(digits)])
        if (a, b) in seen or held_out(a, b):
            continue
        seen.add((a, b))
        trace, _, spans = reasoning_trace_roles(a, b, rng, slip_rate, carry_slip_rate)
        attempt, attempt_spans = attempt_roles(a, b)
        row = {
            "question": question_text(a, b, rng.randrange(len(QUESTIONS))),
            "solution": str(a + b),
            "cot_type": "math",
            "source_type": "lorascope/toy_addition",
            "deepseek_thinking_trajectory": trace,
            "deepseek_attempt": attempt,
        }
        rows.append((row, spans, attempt_spans))
    return rows


def held_out(a: int, b: int) -> bool:
    """Whether ``a + b`` is in the held-out pool: benchmarks draw only from it,
    the SFT set never does. A fixed hash of the pair, so the pool does not
    depend on which benchmarks a config lists."""
    return zlib.crc32(f"{a}+{b}".encode()) % HELD_OUT_EVERY == 0


def held_out_capacity(digits: int) -> int:
    """How many distinct ``digits``-digit problems a benchmark may draw: the
    pool holds ~1/HELD_OUT_EVERY of the pairs; at most half of it is asked
    for (ten one-digit sums, 810 two-digit ones)."""
    numbers = 10 if digits == 1 else 9 * 10 ** (digits - 1)
    return numbers**2 // (2 * HELD_OUT_EVERY)


def benchmark_frame(
    name: str, digits: int | list[int], n: int, seed: int
) -> pl.DataFrame:
    """``n`` distinct held-out problems in the normalised benchmark schema.

    ``digits``: the operands' digit count, or a list of counts cycled through
    in order (a benchmark of mixed difficulty, e.g. ``[1, 2, 3]``).
    """
    if n < 1:
        raise ValueError(f"benchmark {name}: n must be >= 1, got {n}")
    cycle = [digits] if isinstance(digits, int) else list(digits)
    if not cycle or min(cycle) < 1:
        raise ValueError(f"benchmark {name}: digits must be >= 1, got {digits}")
    for d in sorted(set(cycle)):
        wanted = sum(cycle[i % len(cycle)] == d for i in range(n))
        if wanted > held_out_capacity(d):
            raise ValueError(
                f"benchmark {name}: {wanted} problems do not fit the held-out pool "
                f"of {d}-digit pairs"
            )
    rng, rows, seen = random.Random(f"{seed}/{name}"), [], set()
    while len(rows) < n:
        a, b = sample_pair(rng, cycle[len(rows) % len(cycle)])
        if (a, b) in seen or not held_out(a, b):
            continue
        seen.add((a, b))
        rows.append(
            {
                "id": f"{name}-{len(rows):04d}",
                "problem": question_text(a, b, rng.randrange(len(QUESTIONS))),
                "answer": str(a + b),
                "choices": None,
                "grader": "math",
            }
        )
    schema = {
        "id": pl.String,
        "problem": pl.String,
        "answer": pl.String,
        "choices": pl.List(pl.String),
        "grader": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def benchmark_pairs(frame: pl.DataFrame) -> set[tuple[int, int]]:
    """Operand pairs of a benchmark frame (to hold them out of training data)."""
    pairs = (re.findall(r"\d+", problem) for problem in frame["problem"])
    return {(int(nums[0]), int(nums[1])) for nums in pairs}
