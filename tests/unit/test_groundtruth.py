"""Ground truth in the toy world: the generator's role record, the parser that
reads the same roles from text, and the feature-vs-role scores."""

from __future__ import annotations

import itertools
import random

import numpy as np
import polars as pl
import pytest

from lorascope.core.chat import ANSWER_MARKER, THINK_MARKER
from lorascope.groundtruth.metrics import (
    auroc_matrix,
    match_roles,
    names_role,
    role_scores,
)
from lorascope.groundtruth.run import tokens_frame
from lorascope.groundtruth.tables import score_kind, summarise
from lorascope.groundtruth.tokens import (
    GroundTruthError,
    TokenSet,
    generation_tokens,
    sft_tokens,
)
from lorascope.toy import tasks
from lorascope.toy.roles import ROLES, parse_completion, parse_trace, role_matrix

END = "<|im_end|>"


def char_roles(spans):
    out = {}
    for s in spans:
        for c in range(s.start, s.end):
            out.setdefault(c, set()).add(s.role)
    return out


def roles_of(text, spans, piece, nth=0):
    """The roles of the characters of the nth occurrence of `piece`."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(piece, at + 1)
    cr = char_roles(spans)
    return [cr.get(c, set()) for c in range(at, at + len(piece))]


def test_parser_reads_the_roles_the_generator_wrote():
    rng = random.Random(5)
    n_slips = 0
    for _ in range(600):
        a, b = tasks.sample_pair(rng, rng.randint(1, 5))
        text, slipped, spans = tasks.reasoning_trace_roles(a, b, rng, 0.3, 0.8)
        n_slips += slipped
        assert char_roles(parse_trace(text)) == char_roles(spans), text
        attempt, attempt_spans = tasks.attempt_roles(a, b)
        assert attempt == tasks.attempt_text(a, b)
        assert char_roles(parse_completion(
            THINK_MARKER + text + ANSWER_MARKER + "Answer: " + attempt + END,
            THINK_MARKER, ANSWER_MARKER, END,
        ))  # fmt: skip
    assert n_slips > 100  # the slipped lines were exercised


def test_generator_text_is_the_one_without_roles():
    for seed in range(20):
        with_roles = tasks.reasoning_trace_roles(
            4567, 898, random.Random(seed), 0.5, 0.5
        )
        plain = tasks.reasoning_trace(4567, 898, random.Random(seed), 0.5, 0.5)
        assert with_roles[:2] == plain
    rows = tasks.sft_rows(30, [2, 3], 1, 0.2, 0.6)
    frame = tasks.sft_frame(30, [2, 3], 1, 0.2, 0.6)
    assert frame.to_dicts() == [r for r, _, _ in rows]


def test_roles_of_a_trace_with_a_forgotten_carry():
    # 57 + 68: the first carry (into the tens) is forgotten, then redone.
    text, slipped, spans = tasks.reasoning_trace_roles(57, 68, random.Random(3), 0, 1)
    assert slipped
    assert text.splitlines()[2:4] == [
        "5+6+0=11",
        "Wait, 5+6+1=12 carry 1, digits 25",
    ]
    slip_line = "5+6+0=11"
    assert all("slip" in r for r in roles_of(text, spans, slip_line))
    assert roles_of(text, spans, slip_line)[0] == {"column", "slip"}
    assert roles_of(text, spans, slip_line)[4] == {"carry_in", "slip"}
    assert roles_of(text, spans, "Wait,") == [{"wait"}] * 5
    line = "5+6+1=12 carry 1"
    r = roles_of(text, spans, line)
    assert r[0] == r[2] == {"column"} and r[4] == {"carry_in"}
    assert r[6] == r[7] == set()  # the column total plays no role
    assert r[-1] == {"carry_out"} and r[8] == {"format"}
    assert roles_of(text, spans, "125") == [{"answer"}] * 3


def test_garbled_text_keeps_only_layout_roles():
    text = THINK_MARKER + "12+3\nWe add 6, =9\n" + END
    spans = parse_completion(text, THINK_MARKER, ANSWER_MARKER, END)
    assert {s.role for s in spans} == {"format"}
    assert min(s.start for s in spans) >= len(THINK_MARKER)  # prompt: no role


def test_role_matrix_unions_characters_per_token():
    spans = parse_trace("Wait, 1+2+0=3 carry 0, digits 3")
    tokens = ["Wait", ",", " ", "1", "+", "2"]
    ends = np.cumsum([len(t) for t in tokens]).tolist()
    m = np.array(role_matrix(spans, ends))
    col = {r: i for i, r in enumerate(ROLES)}
    assert m[0, col["wait"]] and m[1, col["wait"]] and not m[2, col["wait"]]
    assert m[3, col["column"]] and m[5, col["column"]] and m[4, col["format"]]


def f1_brute(v, y):
    best = 0.0
    for t in np.unique(v):
        p = v >= t
        tp = (p & y).sum()
        best = max(best, 2 * tp / (p.sum() + y.sum()))
    return best


def test_role_scores_match_the_naive_references():
    rng = np.random.default_rng(0)
    T, F = 200, 6
    v = np.round(rng.normal(size=(T, F)), 1)  # many ties
    v[:, 1] = np.where(v[:, 1] > 0.5, v[:, 1], 0.0)  # sparse, like SAE codes
    y = rng.random((T, len(ROLES))) < 0.2
    y[:, 0] = v[:, 0] > 0.3  # a feature that is exactly a role
    y[:, 6] = False  # a role with no positive
    auc, f1, thr = role_scores(v, y)
    np.testing.assert_allclose(auc, auroc_matrix(v, y), equal_nan=True)
    for f in range(F):
        for r in range(6):
            assert f1[f, r] == pytest.approx(f1_brute(v[:, f], y[:, r]))
    assert f1[0, 0] == 1.0 and auc[0, 0] == 1.0 and thr[0, 0] > 0.3
    assert np.isnan(f1[:, 6]).all() and np.isnan(auc[:, 6]).all()


def test_matching_is_one_to_one_and_optimal():
    rng = np.random.default_rng(1)
    s = rng.random((5, 3))
    pairs = match_roles(s, ["a", "b", "c"])
    feats = [f for _, f in pairs]
    assert len(set(feats)) == 3
    best = max(
        sum(s[p[i], i] for i in range(3)) for p in itertools.permutations(range(5), 3)
    )
    assert sum(s[f, "abc".index(r)] for r, f in pairs) == pytest.approx(best)
    # a role with no positive (all NaN) is not matched
    s[:, 1] = np.nan
    assert [r for r, _ in match_roles(s, ["a", "b", "c"])] == ["a", "c"]


@pytest.mark.parametrize(
    "text, role, named",
    [
        ('token "Wait" after "\\n" (100%)', "wait", True),
        ('token "1" after "carry" (90%)', "carry_out", True),
        ("the digit written as the final answer", "answer", True),
        ('token "1" after "=" (100%)', "answer", False),
        ("operands of the column being added", "column", True),
        ('tokens "+", "=" (80%)', "format", True),
        ("single digit tokens", "slip", False),
        (None, "wait", False),
    ],
)
def test_names_role(text, role, named):
    assert names_role(text, role) is named


def toy_decode(ids):
    """Characters as tokens: a tokenizer that round-trips every text."""
    return [chr(i) for i in ids]


def toy_encode(text):
    return [ord(c) for c in text]


def test_sft_tokens_use_the_generator_record_and_check_the_text():
    rows = tasks.sft_rows(3, [2], 0, 0.0, 1.0)
    texts = {
        i: "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
        + THINK_MARKER + r["deepseek_thinking_trajectory"] + ANSWER_MARKER
        + "Answer: " + r["deepseek_attempt"] + END + "\n"
        for i, (r, _, _) in enumerate(rows)
    }  # fmt: skip
    ts = TokenSet()
    sft_tokens(ts, {d: toy_encode(t) for d, t in texts.items()}, rows, toy_decode)
    assert ts.agree == ts.compared > 0  # the parser agrees with the record
    frame = tokens_frame(ts)
    scored = frame.filter("scored")
    assert scored.height < frame.height  # the prompt is not scored
    assert (
        scored["answer"].sum() > 0
        and frame.filter(~pl.col("scored"))[list(ROLES)].sum_horizontal().sum() == 0
    )
    bad = {0: toy_encode(texts[0].replace("result", "resolt"))}
    with pytest.raises(GroundTruthError, match="doc 0: its text is not"):
        sft_tokens(TokenSet(), bad, rows, toy_decode)
    with pytest.raises(GroundTruthError, match="toy.n_sft"):
        sft_tokens(TokenSet(), {7: toy_encode(texts[0])}, rows, toy_decode)


def test_generation_that_does_not_round_trip_fails_naming_it():
    with pytest.raises(GroundTruthError, match="generation g1"):
        generation_tokens(
            TokenSet(), [("g1", "p", "x")], lambda t: [0], lambda ids: ["?"]
        )


def test_score_kind_and_summary():
    rng = np.random.default_rng(2)
    T = 300
    y = rng.random((T, len(ROLES))) < 0.2
    v = np.stack([y[:, 0] * 2.0, y[:, 4] + 0.1 * rng.random(T), rng.random(T)], 1)
    feats = pl.DataFrame({"feature": [10, 11, 12], "label": ["a", "b", "c"]})
    scores, matched = score_kind(
        "sae", "sft", v, y, feats, {10: "the column being added", 11: "digits"}
    )
    assert scores.height == 3 * len(ROLES)
    m = {r["role"]: r for r in matched.iter_rows(named=True)}
    assert m["column"]["feature"] == 10 and m["column"]["best_f1"] == 1.0
    assert m["column"]["names_role"] is True
    assert m["wait"]["feature"] == 11 and m["wait"]["names_role"] is False
    assert matched.height == 3  # three features, seven roles: one-to-one
    p = y[:, 0].mean()
    assert m["column"]["f1_all_tokens"] == pytest.approx(2 * p / (1 + p))
    summary = summarise(matched, {"sae": "offline"})
    assert summary["n_roles"].to_list() == [3]
    assert summary["explainer"].to_list() == ["offline"]
    with pytest.raises(ValueError, match="3 value columns for 2 feature rows"):
        score_kind("sae", "sft", v, y, feats.head(2), {})
