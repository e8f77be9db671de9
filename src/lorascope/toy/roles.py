"""What every character of a toy trace is doing: the ground truth of the world.

Used by ``lorascope.toy.tasks`` (the generator records the roles of what it
writes) and by rule `ground_truth` (``lorascope.groundtruth``), which parses
the same roles out of any text in the world's format (benchmark generations,
which no generator wrote) and maps them onto tokens. The parser is checked
against the generator's own record on random traces
(tests/unit/test_toy_roles.py), so a role of a generated token means what it
means in the SFT set.

Roles (a character may have several; ``ROLES`` is their fixed order):

- ``column``: the two operand digits of the column being added (``x+y``);
- ``carry_in``: the carry written into the column (``+c``);
- ``carry_out``: the carry the column passes on (``carry 1``);
- ``slip``: every character of a slipped line (a forgotten carry or a
  mis-added column, written up to its wrong total);
- ``wait``: the ``Wait,`` that starts the corrected line;
- ``answer``: the digits of the final answer (``result N`` and ``\\boxed{N}``);
- ``format``: every other non-digit character of the think and answer
  sections (``+``, ``=``, `` carry``, ``, digits``, ``result``, newlines,
  ``Answer:``, ``\\boxed{}``).

Digits that are none of these (column totals, the running digits, the
operands still to add, the restated problem) carry no role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ROLES",
    "Span",
    "TraceBuilder",
    "parse_attempt",
    "parse_completion",
    "parse_trace",
    "role_matrix",
]

ROLES = ("column", "carry_in", "carry_out", "slip", "wait", "answer", "format")


@dataclass(frozen=True)
class Span:
    """Characters ``[start, end)`` of a text have ``role``."""

    start: int
    end: int
    role: str


class TraceBuilder:
    """Text written piece by piece, each piece with the roles it plays."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.n = 0

    def add(self, text: str, *roles: str) -> None:
        for role in roles:
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; known: {ROLES}")
            if text:
                self.spans.append(Span(self.n, self.n + len(text), role))
        self.parts.append(text)
        self.n += len(text)

    def text(self) -> str:
        return "".join(self.parts)


# A complete column line (the generator's line_text), optionally a correction.
_LINE = re.compile(
    r"(?P<wait>Wait,)?(?P<sp> )?(?P<x>\d)\+(?P<y>\d)\+(?P<c>\d)=(?P<t>\d+)"
    r" carry (?P<co>\d), digits (?P<d>\d+)(?:, rest (?P<r>\d*\+\d*))?"
)
# A slipped line: a column written up to its total, then nothing.
_SLIP = re.compile(r"(?P<x>\d)\+(?P<y>\d)\+(?P<c>\d)=(?P<t>\d+)")
_RESULT = re.compile(r"result (?P<n>\d+)")
_BOXED = re.compile(r"\\boxed\{(?P<n>\d+)\}")


def _format_spans(text: str, offset: int, skip: list[Span]) -> list[Span]:
    """``format`` for every non-digit character outside ``skip`` spans."""
    taken = set()
    for s in skip:
        taken.update(range(s.start, s.end))
    out = []
    for i, ch in enumerate(text):
        if not ch.isdigit() and offset + i not in taken:
            out.append(Span(offset + i, offset + i + 1, "format"))
    return out


def parse_trace(text: str, offset: int = 0) -> list[Span]:
    """Roles in a think-section text, by line (the generator's formats).

    Lines that match no format get only ``format`` on their non-digits: a
    garbled generation keeps its layout roles and loses the others.
    """
    spans: list[Span] = []
    pos = 0
    for line in text.split("\n"):
        base = offset + pos
        m = _LINE.fullmatch(line)
        slip = _SLIP.fullmatch(line) if m is None else None
        res = _RESULT.fullmatch(line) if m is None and slip is None else None
        if m is not None:
            if m["wait"]:
                spans.append(Span(base + m.start("wait"), base + m.end("wait"), "wait"))
            for g, role in (("x", "column"), ("y", "column"), ("c", "carry_in")):
                spans.append(Span(base + m.start(g), base + m.end(g), role))
            spans.append(Span(base + m.start("co"), base + m.end("co"), "carry_out"))
        elif slip is not None:
            for g, role in (("x", "column"), ("y", "column"), ("c", "carry_in")):
                spans.append(Span(base + slip.start(g), base + slip.end(g), role))
            spans.append(Span(base, base + len(line), "slip"))
        elif res is not None:
            spans.append(Span(base + res.start("n"), base + res.end("n"), "answer"))
        pos += len(line) + 1
    waits = [s for s in spans if s.role == "wait"]
    return spans + _format_spans(text, offset, waits)


def parse_attempt(text: str, offset: int = 0) -> list[Span]:
    """Roles in an answer-section text: the boxed digits are the answer."""
    spans = [
        Span(offset + m.start("n"), offset + m.end("n"), "answer")
        for m in _BOXED.finditer(text)
    ]
    return spans + _format_spans(text, offset, [])


def parse_completion(text: str, think: str, answer: str, end: str) -> list[Span]:
    """Roles in a whole rendered conversation (or a completion): the think
    section from ``think`` to ``answer`` (or ``end``), the answer section
    from ``answer`` to ``end``. Text outside the two sections has no role."""
    spans: list[Span] = []
    t0 = text.find(think)
    if t0 < 0:
        return spans
    t0 += len(think)
    a = text.find(answer, t0)
    e = text.find(end, t0)
    t1 = min(x for x in (a, e, len(text)) if x >= 0)
    spans += parse_trace(text[t0:t1], t0)
    if a >= 0 and a == t1:
        a0 = a + len(answer)
        a1 = text.find(end, a0)
        a1 = len(text) if a1 < 0 else a1
        spans += parse_attempt(text[a0:a1], a0)
    return spans


def role_matrix(spans: list[Span], token_ends: list[int]) -> list[list[bool]]:
    """[token][role] flags: a token has a role if any of its characters has.

    ``token_ends``: cumulative character end of each token in the text.
    """
    n_chars = token_ends[-1] if token_ends else 0
    char_roles = [0] * n_chars
    bit = {r: 1 << i for i, r in enumerate(ROLES)}
    for s in spans:
        for c in range(s.start, min(s.end, n_chars)):
            char_roles[c] |= bit[s.role]
    out, start = [], 0
    for end in token_ends:
        mask = 0
        for c in range(start, end):
            mask |= char_roles[c]
        out.append([bool(mask & bit[r]) for r in ROLES])
        start = end
    return out
