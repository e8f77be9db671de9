"""Grade completions against benchmark rows (rules `eval_grade`, `eval_summary`).

Three grader kinds, named by the benchmark row's `grader` column:

- `math`: math-verify on the answer section (`lorascope.core.math_answers`:
  boxed answers first, a bare LaTeX section read whole, every answer under
  a wall-clock limit, `eval.grade_timeout_s`; one that runs out is wrong
  and flagged `grade_timed_out`). Equivalent forms match ("025" == 25,
  14/3 == \\frac{14}{3}, \\sqrt{117} == 3\\sqrt{13}, 90^\\circ == 90), and
  every form is read whole, boxed or bare or ending a sentence: vectors
  and matrices, tuples, intervals, sets, dollar amounts (`\\$32,\\!348`),
  percentages, values with units. Golds that are words (`\\text{Evelyn}`)
  are also compared as normalised text (`The function is odd.`).
- `choice`: a letter A-D (or up to the number of choices). Extraction order
  on the answer section, first hit wins:
    1. an explicit statement: `Answer: (C)`, `answer is C`, `option C`;
    2. `\\boxed{C}` / `\\boxed{\\text{C}}`;
    3. the section is a single letter, optionally bold, in brackets or with
       a trailing `.`/`)`;
    4. the section's text equals one choice's text (normalised).
  Nothing else: an answer we cannot read is wrong, never a default letter.
- `exact`: normalised string equality (toy benchmarks).

The answer section (after the s1 answer marker) is graded. A completion that
stopped on its own without the marker (a base model never trained on the s1
format answers in its own) is graded on its whole text
unless `eval.grade_without_answer_marker` is off; a truncated completion
without the marker is wrong (it holds only intermediate answers).
"""

from __future__ import annotations

import atexit
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import polars as pl

from lorascope.core.chat import split_completion
from lorascope.core.math_answers import MathChecker, normalise_text

__all__ = [
    "GRADERS",
    "Grade",
    "extract_choice",
    "grade",
    "grade_answer",
    "grade_frame",
    "summarise",
]

GRADERS = ("math", "choice", "exact")
DEFAULT_TIMEOUT_S = 10.0  # the schema's eval.grade_timeout_s default


class Grade(NamedTuple):
    """Verdict for one sample: `extracted` is None when nothing was readable."""

    extracted: str | None
    correct: bool
    timed_out: bool = False  # math-verify ran out of time: graded wrong


_shared: MathChecker | None = None


def shared_checker() -> MathChecker:
    """One checker per process for callers that grade a row at a time."""
    global _shared
    if _shared is None:
        _shared = MathChecker(DEFAULT_TIMEOUT_S)
        atexit.register(_shared.close)
    return _shared


_ANSWER_PREFIX = re.compile(r"^\s*\**answer\**\s*:\s*", re.IGNORECASE)


def _answer_body(answer_section: str) -> str:
    """Strip the leading `Answer:` the s1 format puts in the answer section."""
    return _ANSWER_PREFIX.sub("", answer_section, count=1).strip()


def extract_choice(body: str, choices: Sequence[str]) -> str | None:
    """The letter chosen in an answer section, or None (see module docstring)."""
    letters = "ABCDEFGHIJ"[: len(choices)]
    cls = f"[{letters}]"
    # Keyword case-insensitive, letter upper-case: "the answer is a" is prose.
    explicit = re.findall(
        rf"(?i:answer|option|choice)(?:\s+(?i:is))?\s*:?\s*[\(\[]?\**({cls})\b",
        body,
    )
    if explicit:
        return explicit[-1].upper()
    boxed = re.findall(rf"\\boxed\s*{{\s*(?:\\text\s*{{)?\s*\(?({cls})\)?", body)
    if boxed:
        return boxed[-1]
    alone = re.fullmatch(rf"[\s*]*[\(\[]?({cls})[\)\]\.]?[\s*.]*", body)
    if alone:
        return alone.group(1)
    text = normalise_text(body)
    for letter, choice in zip(letters, choices, strict=True):
        if text and text == normalise_text(choice):
            return letter
    return None


def _grade_choice(gold: str, body: str, choices: Sequence[str]) -> Grade:
    letter = extract_choice(body, choices)
    return Grade(letter, letter is not None and letter == gold.strip().upper())


def grade_answer(
    grader: str,
    gold: str,
    answer_section: str,
    choices: Sequence[str] | None,
    checker: MathChecker | None = None,
) -> Grade:
    """Grade an answer section (the text after the s1 answer marker).

    `checker` runs math answers (default: this process's shared one, with
    the default time limit)."""
    body = _answer_body(answer_section)
    if not body:
        return Grade(None, False)
    if grader == "math":
        return Grade(*(checker or shared_checker()).check(gold, body))
    if grader == "choice":
        if not choices:
            raise ValueError("grader 'choice' needs a non-empty `choices` list")
        return _grade_choice(gold, body, choices)
    if grader == "exact":
        pred = normalise_text(body)
        return Grade(pred, pred == normalise_text(gold))
    raise ValueError(f"unknown grader {grader!r}; expected one of {GRADERS}")


def grade(
    row: Mapping,
    completion: str,
    truncated: bool = False,
    fallback: bool = True,
    checker: MathChecker | None = None,
) -> Grade:
    """Grade a generated completion (think + answer) for one benchmark row.

    The answer section is graded. A completion that ended on its own without
    the answer marker (a base model answering in its own format) is graded on
    its whole text when `fallback` is on; a truncated one never is: it has no
    final answer, only intermediate ones.
    """
    text, answer_section = split_completion(completion)
    if answer_section is None:
        if truncated or not fallback:
            return Grade(None, False)
        answer_section = text
    return grade_answer(
        row["grader"], str(row["answer"]), answer_section, row.get("choices"), checker
    )


EVAL_COLUMNS = [
    "id",
    "prompt",
    "completion",
    "extracted",
    "gold",
    "correct",
    "n_generated_tokens",
    "truncated",
    "graded_from",  # "answer" (the answer section) or "completion" (fallback)
    "grade_timed_out",  # math-verify ran out of time (graded wrong)
]


def grade_frame(
    bench: pl.DataFrame,
    generations: pl.DataFrame,
    fallback: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> pl.DataFrame:
    """Per-sample eval frame (EVAL_COLUMNS) from a benchmark and its generations.

    Each math answer gets `timeout_s` seconds (eval.grade_timeout_s).

    Every benchmark id must have exactly one generation: a missing one is an
    error naming the id, not a silently smaller denominator.
    """
    if generations["id"].is_duplicated().any():
        raise ValueError("generations hold duplicate ids")
    joined = bench.join(generations, on="id", how="left", maintain_order="left")
    missing = joined.filter(pl.col("completion").is_null())["id"]
    if missing.len():
        raise ValueError(
            f"{missing.len()} benchmark ids have no generation, e.g. {missing[0]!r}"
        )
    rows = list(joined.iter_rows(named=True))
    with MathChecker(timeout_s) as checker:
        verdicts = [
            grade(r, r["completion"], r["truncated"], fallback, checker) for r in rows
        ]
    has_marker = [split_completion(r["completion"])[1] is not None for r in rows]
    return joined.with_columns(
        extracted=pl.Series([v.extracted for v in verdicts], dtype=pl.String),
        gold=pl.col("answer"),
        correct=pl.Series([v.correct for v in verdicts], dtype=pl.Boolean),
        graded_from=pl.Series(
            ["answer" if m else "completion" for m in has_marker], dtype=pl.String
        ),
        grade_timed_out=pl.Series([v.timed_out for v in verdicts], dtype=pl.Boolean),
    ).select(EVAL_COLUMNS)


def summarise(frames: Mapping[str, pl.DataFrame]) -> dict:
    """summary.json: accuracy, counts, truncation and token stats per benchmark."""
    out = {}
    for name, df in frames.items():
        out[name] = {
            "n": df.height,
            "n_correct": int(df["correct"].sum()),
            "accuracy": float(df["correct"].mean()),
            "n_unparsed": int(df["extracted"].is_null().sum()),
            "n_without_answer_marker": int((df["graded_from"] != "answer").sum()),
            "n_grade_timeouts": int(df["grade_timed_out"].sum()),
            "truncation_rate": float(df["truncated"].mean()),
            "mean_generated_tokens": float(df["n_generated_tokens"].mean()),
            "max_generated_tokens": int(df["n_generated_tokens"].max()),
        }
    return out
