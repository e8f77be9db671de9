"""Grading on realistic answer sections, including ones that must not match."""

import os
import time

import pytest

from lorascope.core.grading import extract_choice, grade, grade_answer
from lorascope.core.math_answers import MathChecker

MATH_MATCH = [
    ("25", "Answer: 025"),  # AIME golds and answers with leading zeros
    ("025", "Answer: The final answer is $\\boxed{25}$."),
    ("204", "Answer: We get $m+n = 204$, so the answer is \\boxed{204}."),
    ("\\frac{14}{3}", "Answer: $\\frac{14}{3}$"),
    ("\\frac{14}{3}", "Answer: 14/3"),
    ("\\frac{1}{2}", "Answer: 0.5"),
    ("3\\sqrt{13}", "Answer: $\\sqrt{117}$"),
    (
        "(-\\infty,-2)\\cup(3,\\infty)",
        "Answer: $x \\in (-\\infty, -2) \\cup (3, \\infty)$",
    ),
    ("90^\\circ", "Answer: The angle is $90^\\circ$."),
    ("90^\\circ", "Answer: \\boxed{90}"),
    ("\\text{Evelyn}", "Answer: \\boxed{\\text{Evelyn}}"),
    ("\\text{Evelyn}", "Answer: Evelyn"),
    ("6 - 5i", "Answer: $6-5i$"),
    ("p - q", "Answer: $\\boxed{p-q}$"),
    # boxed beats an earlier number in the same section
    ("3", "Answer: At first I thought 2, but checking gives \\boxed{3}."),
]

MATH_MISMATCH = [
    ("10", "Answer: 100"),
    ("\\frac{14}{3}", "Answer: 4.67"),  # rounded decimals are not the fraction
    ("\\text{Evelyn}", "Answer: Bob"),
    ("\\text{Evelyn}", "Answer: Evelyn and Bob"),
    ("10", "Answer: I could not finish the computation."),
    ("2", "Answer: \\boxed{3}"),
    ("3\\sqrt{13}", "Answer: $\\sqrt{118}$"),
    ("(-\\infty,-2)\\cup(3,\\infty)", "Answer: $(-\\infty, -2] \\cup (3, \\infty)$"),
    ("25", ""),
]

# An answer section that is one bare LaTeX expression (no `$`, no `\boxed`)
# is read whole: it matches its own value and not the fragment a bare read
# would keep (`3` of `3\sqrt{13}`, `5` of `6 - 5i`).
BARE_LATEX = [
    ("Answer: 3\\sqrt{13}", "3\\sqrt{13}", ["3", "13"]),
    ("Answer: \\frac{14}{3}", "\\frac{14}{3}", ["14", "3"]),
    ("Answer: (-2, 1)", "(-2,1)", ["1", "-2"]),
    ("Answer: 6 - 5i", "6-5i", ["6", "5", "-5i"]),
]


# Every answer form, read whole whether boxed, bare, or ending a sentence:
# form -> (gold, sections that state it, the same sections perturbed to a
# wrong value). A vector read as its last entry, a dollar amount not read at
# all, or a tuple read as a fragment fails here.
VECTOR = "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}"
MATRIX = "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"
ANSWER_FORMS = {
    "vector": (
        VECTOR,
        [
            VECTOR,
            f"$\\boxed{{{VECTOR}}}$",
            f"The vector is {VECTOR}.",
            "\\begin{bmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\\\ \\frac{5}{3} "
            "\\end{bmatrix}",
        ],
        [
            VECTOR.replace("5/3", "4/3"),
            f"$\\boxed{{{VECTOR.replace('-1/3', '1/3')}}}$",
            f"The vector is {VECTOR.replace('2/3', '2/5')}.",
            "5/3",  # the last entry alone is not the vector
        ],
    ),
    "matrix": (
        MATRIX,
        [MATRIX, f"\\boxed{{{MATRIX}}}", f"The matrix is {MATRIX}."],
        [
            MATRIX.replace("3 & 4", "4 & 3"),
            f"\\boxed{{{MATRIX.replace('1 & 2', '1 & 0')}}}",
            f"The matrix is {MATRIX.replace('4', '5')}.",
            "4",
        ],
    ),
    "tuple": (
        "(3, -2)",
        ["(3, -2)", "$\\boxed{(3,-2)}$", "The intersection is at (3, -2)."],
        ["(-2, 3)", "$\\boxed{(3,2)}$", "The intersection is at (3, 2).", "-2"],
    ),
    "interval": (
        "[2, 5)",
        ["[2, 5)", "x \\in [2, 5)", "\\boxed{[2,5)}", "The solution set is [2, 5)."],
        [
            "[2, 5]",
            "x \\in (2, 5)",
            "\\boxed{[2,6)}",
            "The solution set is [2, 5].",
            "5",
        ],
    ),
    "set": (
        "\\{1, 2, 3\\}",
        [
            "\\{3, 2, 1\\}",
            "1, 2, 3",
            "\\boxed{\\{1,2,3\\}}",
            "The roots are 1, 2, and 3.",
        ],
        [
            "\\{1, 2, 4\\}",
            "1, 2",
            "\\boxed{\\{1,2\\}}",
            "The roots are 1, 2, and 4.",
            "3",
        ],
    ),
    "currency": (
        "\\$18.90",
        [
            "\\$18.90",
            "$18.90",
            "\\boxed{\\$18.90}",
            "The total is \\$18.90.",
            "18.90 dollars",
        ],
        [
            "\\$18.91",
            "$19.80",
            "\\boxed{\\$1.89}",
            "The total is \\$18.09.",
            "18 dollars",
        ],
    ),
    "currency with thousands": (
        "\\$32,\\!348",
        [
            "\\$32,\\!348",
            "\\$32,348",
            "32348",
            "\\boxed{\\$32,\\!348}",
            "It costs \\$32,\\!348.",
        ],
        [
            "\\$32,\\!384",
            "\\$3,\\!248",
            "348",
            "\\boxed{\\$32,\\!349}",
            "It costs \\$32.",
        ],
    ),
    "percentage": (
        "40\\%",
        ["40\\%", "40%", "\\boxed{40\\%}", "The probability is 40\\%.", "40 percent"],
        ["45\\%", "4%", "\\boxed{14\\%}", "The probability is 4\\%.", "14 percent"],
    ),
    "unit": (
        "12 \\text{ inches}",
        [
            "12 inches",
            "12 \\text{ inches}",
            "\\boxed{12\\text{ in}}",
            "It is 12 inches.",
        ],
        [
            "13 inches",
            "1.2 \\text{ inches}",
            "\\boxed{21\\text{ in}}",
            "It is 2 inches.",
        ],
    ),
    "unit after an expression": (
        "3\\sqrt{13} \\text{ cm}^2",
        [
            "3\\sqrt{13} \\text{ cm}^2",
            "\\sqrt{117} cm",
            "The area is 3\\sqrt{13} square units.",
        ],
        ["3\\sqrt{14} \\text{ cm}^2", "\\sqrt{13} cm", "The area is 13 square units."],
    ),
    "degrees": (
        "90^\\circ",
        ["90^\\circ", "\\boxed{90}", "The angle is 90 degrees."],
        ["80^\\circ", "\\boxed{9}", "The angle is 45 degrees."],
    ),
    "text": (
        "\\text{odd}",
        ["odd", "\\text{odd}", "\\boxed{\\text{odd}}", "The function is odd."],
        [
            "even",
            "\\text{even}",
            "\\boxed{\\text{neither}}",
            "The function is neither even nor odd.",
            "The function is not odd.",
        ],
    ),
}
FORM_RIGHT = [
    pytest.param(gold, section, id=f"{form}: {section}")
    for form, (gold, right, _) in ANSWER_FORMS.items()
    for section in right
]
FORM_WRONG = [
    pytest.param(gold, section, id=f"{form}: {section}")
    for form, (gold, _, wrong) in ANSWER_FORMS.items()
    for section in wrong
]


@pytest.mark.parametrize("gold,body", FORM_RIGHT)
def test_every_answer_form_is_read_whole(gold, body):
    verdict = grade_answer("math", gold, "Answer: " + body, None)
    assert verdict.correct, (gold, body, verdict)


@pytest.mark.parametrize("gold,body", FORM_WRONG)
def test_every_answer_form_perturbed_is_wrong(gold, body):
    verdict = grade_answer("math", gold, "Answer: " + body, None)
    assert not verdict.correct, (gold, body, verdict)


def test_a_bare_vector_is_extracted_whole_not_as_its_last_entry():
    verdict = grade_answer("math", VECTOR, "Answer: " + VECTOR, None)
    assert verdict.extracted == VECTOR
    assert not grade_answer("math", "5/3", "Answer: " + VECTOR, None).correct


@pytest.mark.parametrize("gold,section", MATH_MATCH)
def test_math_equivalent_forms_match(gold, section):
    verdict = grade_answer("math", gold, section, None)
    assert verdict.correct, (gold, section, verdict)
    assert verdict.extracted


@pytest.mark.parametrize("gold,section", MATH_MISMATCH)
def test_math_wrong_answers_do_not_match(gold, section):
    assert not grade_answer("math", gold, section, None).correct


@pytest.mark.parametrize("section,gold,fragments", BARE_LATEX)
def test_math_bare_latex_is_read_whole(section, gold, fragments):
    assert grade_answer("math", gold, section, None).correct
    for fragment in fragments:
        assert not grade_answer("math", fragment, section, None).correct


def test_check_math_in_process_agrees_with_the_tables():
    """check_math, the function the checker's child runs, called directly:
    the same verdicts as through MathChecker, and the extraction itself (a
    test through the child sees only what crosses the pipe, and a mutation
    tool cannot see into the child at all)."""
    from lorascope.core.math_answers import check_math

    def body(section):
        return section.removeprefix("Answer: ")

    for gold, section in MATH_MATCH:
        extracted, ok = check_math(gold, body(section))
        assert ok and extracted, (gold, section)
    for gold, section in MATH_MISMATCH:
        if body(section):
            assert not check_math(gold, body(section))[1], (gold, section)
    for section, gold, fragments in BARE_LATEX:
        extracted, ok = check_math(gold, body(section))
        assert ok and extracted.replace(" ", "") == gold, (section, extracted)
        for fragment in fragments:
            assert not check_math(fragment, body(section))[1]
    # A bare expression is read whole; prose is not (its boxed answer wins,
    # even over a later "final answer is", which math-verify's default
    # priorities would take).
    assert check_math("3", "\\boxed{3}. The final answer is $2$") == ("3", True)
    assert check_math("25", "025") == ("025", True)
    assert check_math("10", "\\boxed{3} then 10") == ("3", False)
    # Word golds compare as normalised text, which is also what is extracted.
    assert check_math("\\text{Evelyn}", "Evelyn") == ("evelyn", True)
    assert check_math("\\text{Evelyn}", "Evelyn and Bob") == ("evelyn and bob", False)
    assert check_math("7", "no idea") == (None, False)
    with pytest.raises(ValueError, match=r"^gold answer '' is not parseable by"):
        check_math("", "1")


def test_math_unparseable_answer_is_wrong_with_no_extraction():
    verdict = grade_answer("math", "7", "Answer: no idea", None)
    assert verdict == (None, False, False)


@pytest.mark.parametrize("fork", [False, True], ids=["fresh", "forked"])
def test_math_answers_that_never_finish_are_wrong_within_the_limit(fork):
    """math-verify alone never returns on these (sympy builds the tower);
    each gets the time limit, grades wrong, and the next answer still grades.
    The child is a fresh interpreter, or a fork where math-verify is loaded."""
    import math_verify  # noqa: F401 (what a fork inherits)

    with MathChecker(timeout_s=1.5, fork=fork) as checker:
        checker.check("1", "1")  # start the child outside the timed part
        start = time.monotonic()
        for tower in ("\\boxed{10^{10^{10}}}", "\\boxed{9^{9^{9^{9}}}}"):
            verdict = grade_answer("math", "10", "Answer: " + tower, None, checker)
            assert verdict == (None, False, True)
        assert time.monotonic() - start < 2 * 1.5 + 10  # two limits + restarts
        assert grade_answer("math", "12", "Answer: 12", None, checker).correct
        assert checker.check("\\frac{1}{2}", "$0.5$")[1:] == (True, False)
        pid = checker._proc.pid
    with pytest.raises(ProcessLookupError):  # closed: the child is gone
        os.kill(pid, 0)


def test_math_unparseable_gold_fails_clearly_through_the_child():
    with pytest.raises(ValueError, match="not parseable"):
        grade_answer("math", "", "Answer: 1", None)


CHOICES = ["3.2 eV", "1.6 eV", "0.8 eV", "6.4 eV"]


@pytest.mark.parametrize(
    "section,letter",
    [
        ("Answer: C", "C"),
        ("Answer: (B)", "B"),
        ("Answer: The correct answer is D because the gap doubles.", "D"),
        ("Answer: **A**", "A"),
        ("Answer: Option B is right.", "B"),
        ("Answer: $\\boxed{C}$", "C"),
        ("Answer: \\boxed{\\text{(D)}}", "D"),
        ("Answer: (A).", "A"),
        ("Answer: 1.6 eV", "B"),  # the text of a choice
    ],
)
def test_choice_letter_extraction(section, letter):
    body = section.removeprefix("Answer: ")
    assert extract_choice(body, CHOICES) == letter
    assert grade_answer("choice", letter, section, CHOICES).correct
    other = "A" if letter != "A" else "B"
    assert not grade_answer("choice", other, section, CHOICES).correct


@pytest.mark.parametrize(
    "section",
    [
        "Answer: I am not sure.",  # no letter: wrong, never a default letter
        "Answer: the answer is a mystery",  # lower-case prose is not a letter
        "Answer: E",  # out of range for four choices
        "Answer: 2.0 eV",  # not one of the choices
        "Answer: A Because",  # no explicit keyword, not alone
    ],
)
def test_choice_unreadable_is_wrong(section):
    verdict = grade_answer("choice", "A", section, CHOICES)
    assert verdict.extracted is None
    assert not verdict.correct


def test_choice_without_choices_fails_clearly():
    # The whole message: it is what the user reads.
    with pytest.raises(
        ValueError, match=r"^grader 'choice' needs a non-empty `choices` list$"
    ):
        grade_answer("choice", "A", "Answer: A", None)


def test_exact_grader_normalises_case_and_punctuation():
    verdict = grade_answer("exact", "blue fox", "Answer: Blue fox.", None)
    assert verdict == ("blue fox", True, False)
    assert not grade_answer("exact", "blue fox", "Answer: red fox", None).correct


def test_unknown_grader_fails_clearly():
    with pytest.raises(ValueError, match="unknown grader 'regex'"):
        grade_answer("regex", "1", "Answer: 1", None)


def test_grade_reads_only_the_answer_section():
    from lorascope.core.chat import ANSWER_MARKER as ANSWER

    row = {"grader": "math", "answer": "12", "choices": None}
    thinking = "Maybe it is 11. Wait, recount: \\boxed{11}"
    good = thinking + ANSWER + "Answer: \\boxed{12}"
    assert grade(row, good).correct
    # The answer section decides even when the thinking had the right number.
    assert not grade(row, "\\boxed{12} no" + ANSWER + "Answer: 11").correct
    # No answer marker: graded on the whole completion if it ended by itself
    # (a base model's own format), never if it was truncated.
    plain = "Adding gives \\boxed{12}."
    assert grade(row, plain).correct
    assert not grade(row, plain, truncated=True).correct
    assert not grade(row, plain, fallback=False).correct
    assert not grade(row, "Adding gives \\boxed{13}.").correct


def _bench():
    import polars as pl

    from lorascope.evaluation.benchmarks import SCHEMA

    return pl.DataFrame(
        {
            "id": ["a", "b", "c"],
            "problem": ["1+1", "2+2", "pick"],
            "answer": ["2", "4", "B"],
            "choices": [None, None, ["x", "y"]],
            "grader": ["math", "math", "choice"],
        },
        schema=SCHEMA,
    )


def test_grade_frame_and_summary():
    import polars as pl

    from lorascope.core.chat import ANSWER_MARKER
    from lorascope.core.grading import EVAL_COLUMNS, grade_frame, summarise

    gens = pl.DataFrame(
        {
            "id": ["c", "a", "b"],  # any order
            "prompt": ["p"] * 3,
            "completion": [
                "hmm" + ANSWER_MARKER + "Answer: (B)",
                "1+1=2" + ANSWER_MARKER + "Answer: \\boxed{2}",
                "2+2 is 5, no wait",  # truncated, never answered
            ],
            "n_generated_tokens": [10, 12, 64],
            "truncated": [False, False, True],
        }
    )
    df = grade_frame(_bench(), gens)
    assert df.columns == EVAL_COLUMNS
    assert df["id"].to_list() == ["a", "b", "c"]
    assert df["correct"].to_list() == [True, False, True]
    assert df["extracted"].to_list() == ["2", None, "B"]
    assert df["graded_from"].to_list() == ["answer", "completion", "answer"]
    assert df["grade_timed_out"].to_list() == [False] * 3
    assert df["gold"].to_list() == ["2", "4", "B"]
    s = summarise({"toy": df})["toy"]
    assert s["n"] == 3 and s["n_correct"] == 2
    assert s["mean_generated_tokens"] == pytest.approx((10 + 12 + 64) / 3)
    assert s["accuracy"] == 2 / 3 and s["n_unparsed"] == 1
    assert s["truncation_rate"] == 1 / 3 and s["max_generated_tokens"] == 64
    assert s["n_without_answer_marker"] == 1 and s["n_grade_timeouts"] == 0
    with pytest.raises(ValueError, match="no generation, e.g. 'b'"):
        grade_frame(_bench(), gens.filter(pl.col("id") != "b"))


class _RecordingChecker:
    """Stands in for MathChecker: records its time limit, answers every math
    question "correct, timed out" so a verdict shows which checker gave it."""

    made: list[float] = []

    def __init__(self, timeout_s: float):
        self.made.append(timeout_s)

    def check(self, gold, body):
        return body, True, True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_grade_frame_grades_with_its_own_time_limit_and_fallback(monkeypatch):
    """The math answers go through one checker with `timeout_s`
    (eval.grade_timeout_s), not the process's default one; a completion
    that ended without the marker is graded whole unless fallback is off."""
    import polars as pl

    from lorascope.core import grading
    from lorascope.core.chat import ANSWER_MARKER

    monkeypatch.setattr(grading, "MathChecker", _RecordingChecker)
    monkeypatch.setattr(_RecordingChecker, "made", [])
    gens = pl.DataFrame(
        {
            "id": ["a", "b", "c"],
            "prompt": ["p"] * 3,
            "completion": ["x" + ANSWER_MARKER + "Answer: 2", "4", "B"],
            "n_generated_tokens": [3, 1, 1],
            "truncated": [False] * 3,
        }
    )
    df = grading.grade_frame(_bench(), gens, timeout_s=3.5)
    assert _RecordingChecker.made == [3.5]
    assert df["grade_timed_out"].to_list() == [True, True, False]
    assert df["correct"].to_list() == [True, True, True]
    assert df["graded_from"].to_list() == ["answer", "completion", "completion"]
    off = grading.grade_frame(_bench(), gens, fallback=False, timeout_s=3.5)
    assert off["correct"].to_list() == [True, False, False]
    assert off["extracted"].to_list() == ["2", None, None]
    with pytest.raises(ValueError, match="^generations hold duplicate ids$"):
        grading.grade_frame(_bench(), pl.concat([gens, gens]))
    # grade() alone falls back by default too.
    assert grading.grade({"grader": "exact", "answer": "Yes"}, "yes").correct


def test_grade_frame_types_its_columns_even_when_nothing_is_read():
    """A frame where no answer was read (or no row at all) still has string
    and boolean columns, not polars' Null type, so it concatenates and
    filters like any other; an unread answer is False, never null."""
    import polars as pl

    from lorascope.core.chat import ANSWER_MARKER
    from lorascope.core.grading import grade_frame

    gens = pl.DataFrame(
        {
            "id": ["a", "b", "c"],
            "prompt": ["p"] * 3,
            # Truncated before the answer; an empty answer; no text at all.
            "completion": ["x", "x" + ANSWER_MARKER + "Answer: ", ""],
            "n_generated_tokens": [1, 1, 1],
            "truncated": [True, False, False],
        }
    )
    types = {
        "extracted": pl.String,
        "gold": pl.String,
        "correct": pl.Boolean,
        "graded_from": pl.String,
        "grade_timed_out": pl.Boolean,
    }
    for bench, g in [(_bench(), gens), (_bench().head(0), gens.head(0))]:
        df = grade_frame(bench, g)
        assert {c: df.schema[c] for c in types} == types
        assert df["extracted"].null_count() == df.height
        assert df["correct"].to_list() == [False] * df.height


def test_choice_with_more_choices_than_letters_fails_clearly():
    """Letters run A-J: an eleventh choice has no letter, so a section that
    names none of the letters fails instead of skipping the extra choice."""
    choices = [f"option {i}" for i in range(11)]
    assert extract_choice("Answer: (B)", choices) == "B"
    with pytest.raises(ValueError, match="longer"):
        extract_choice("Answer: option 10", choices)


def test_normalise_text_strips_wrappers_dollars_and_punctuation():
    """The exact form the exact grader and word golds compare: LaTeX text
    wrappers and `$` gone, a backslash dropped (not turned into a space, so
    `2\\pi` stays one word), punctuation a space, lower case, single spaces."""
    from lorascope.core.math_answers import normalise_text

    text = "The answer: $\\text{Blue}$  \\textbf{Fox}! 2\\pi"
    assert normalise_text(text) == "the answer blue fox 2pi"
    assert normalise_text("\\mathrm{A}, \\boxed{b}.") == "a b"


# Tests added from mutation testing (`make mutation SESSIONS=math_answers`).


def test_check_math_reads_typesetting_lists_vectors_and_boxes_first():
    from lorascope.core.math_answers import check_math

    # `\$` is a dollar sign and `\!` a thin space, on either side.
    assert check_math("18.90", "\\$18.90")[1]
    assert check_math("\\$18.90", "18.90")[1]
    assert check_math("32348", "32,\\!348")[1]
    assert check_math("32,\\!348", "32348")[1]
    # "and" in a bare list is not prose; a bare vector is read whole.
    assert check_math("1, 2, 3", "1, 2, and 3") == ("1, 2, 3", True)
    vector = "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"
    assert check_math(vector, vector) == (vector, True)
    assert not check_math(vector, "\\begin{pmatrix} 3 \\\\ 2 \\end{pmatrix}")[1]
    # Boxed answers rank with math-verify's first pattern ("The final answer
    # is $x$. I hope"), never below it: of the two, the later one counts.
    body = "The final answer is $2$. I hope it is correct. \\boxed{3}"
    assert check_math("3", body) == ("3", True)
    # A word gold and an empty section: nothing read, wrong.
    assert check_math("\\text{Evelyn}", "") == (None, False)


def test_check_math_runs_outside_the_main_thread():
    """math-verify's own timeouts (SIGALRM) stay off: they would refuse to
    run in a thread, and collide with any other alarm."""
    import threading

    from lorascope.core.math_answers import check_math

    got = {}

    def work():
        for body in ("\\boxed{3}", "3"):  # parsed as written; bare, as $3$
            got[body] = check_math("3", body)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert got == {"\\boxed{3}": ("3", True), "3": ("3", True)}
