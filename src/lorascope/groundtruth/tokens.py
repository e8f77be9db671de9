"""The scored tokens of the ground-truth stage and their roles.

Used by rule `ground_truth` (workflow/scripts/ground_truth.py). Two sources:

- ``sft``: documents of `data/sft.parquet`; their roles are the toy
  generator's own record (`lorascope.toy.tasks.sft_rows`), placed onto the
  document's text after checking that the trace and attempt are the ones the
  generator wrote; the parser's roles of the same text are counted against
  them (``parser_agreement``);
- ``generation``: the rank-1 LoRA's benchmark generations (prompt +
  completion, re-encoded), whose roles come from the world's parser
  (`lorascope.toy.roles.parse_completion`): no generator wrote them.

Only tokens of the assistant turn (from the think marker to the end of the
turn) are scored: roles are defined there, the prompt has none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lorascope.core.chat import ANSWER_MARKER, ANSWER_PREFIX, THINK_MARKER
from lorascope.toy.roles import ROLES, Span, parse_completion, role_matrix

__all__ = ["GroundTruthError", "TokenSet", "sft_tokens", "generation_tokens"]

END = "<|im_end|>"


class GroundTruthError(ValueError):
    """Inputs the ground truth cannot be computed from (names what and where)."""


@dataclass
class TokenSet:
    """Sequences to run, and per scored token its source, place and roles."""

    seqs: list[list[int]] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    doc: list[str] = field(default_factory=list)
    scored: list[np.ndarray] = field(default_factory=list)  # bool [T_seq]
    roles: list[np.ndarray] = field(default_factory=list)  # bool [T_seq, R]
    tokens: list[list[str]] = field(default_factory=list)
    agree: int = 0
    compared: int = 0

    def add(self, ids, source, doc, tokens, spans, lo, hi) -> None:
        ends = np.cumsum([len(t) for t in tokens]).tolist()
        starts = [0, *ends[:-1]]
        self.seqs.append([int(i) for i in ids])
        self.source.append(source)
        self.doc.append(doc)
        self.tokens.append(tokens)
        self.scored.append(np.array([lo <= s < hi for s in starts], dtype=bool))
        self.roles.append(np.array(role_matrix(spans, ends), dtype=bool))


def _offsets(text: str) -> tuple[int, int]:
    """Characters of the assistant turn: after the think marker to the end."""
    lo = text.find(THINK_MARKER)
    if lo < 0:
        return 0, 0
    lo += len(THINK_MARKER)
    hi = text.find(END, lo)
    return lo, (len(text) if hi < 0 else hi)


def _shift(spans: list[Span], by: int) -> list[Span]:
    return [Span(s.start + by, s.end + by, s.role) for s in spans]


def _char_roles(spans: list[Span]) -> dict[int, frozenset]:
    out: dict[int, set] = {}
    for s in spans:
        for c in range(s.start, s.end):
            out.setdefault(c, set()).add(s.role)
    return {c: frozenset(r) for c, r in out.items()}


def sft_tokens(
    ts: TokenSet,
    sft_ids: dict[int, Sequence[int]],
    generated: list,
    decode: Callable[[Sequence[int]], list[str]],
) -> None:
    """Add the SFT docs with the generator's roles.

    ``generated[doc]`` = (row, trace spans, attempt spans) of `sft_rows`.
    """
    for doc, ids in sft_ids.items():
        if doc >= len(generated):
            raise GroundTruthError(
                f"data/sft.parquet doc {doc}: the toy generator wrote only "
                f"{len(generated)} rows (toy.n_sft): the SFT set is not this "
                "config's toy set"
            )
        row, trace_spans, attempt_spans = generated[doc]
        tokens = decode(ids)
        text = "".join(tokens)
        lo, hi = _offsets(text)
        trace = row["deepseek_thinking_trajectory"]
        head = THINK_MARKER + trace + ANSWER_MARKER + ANSWER_PREFIX
        at = text.find(head)
        if at < 0 or not text.startswith(row["deepseek_attempt"], at + len(head)):
            raise GroundTruthError(
                f"data/sft.parquet doc {doc}: its text is not the trace and "
                f"attempt the toy generator writes for row {doc} with this "
                "config (toy.seed, toy.n_sft, toy.sft_digits, slip rates)"
            )
        t0 = at + len(THINK_MARKER)
        a0 = at + len(head)
        prefix = a0 - len(ANSWER_PREFIX)
        spans = _shift(trace_spans, t0) + _shift(attempt_spans, a0)
        spans += [
            Span(i, i + 1, "format") for i in range(prefix, a0) if not text[i].isdigit()
        ]
        parsed = parse_completion(text, THINK_MARKER, ANSWER_MARKER, END)
        mine, theirs = _char_roles(spans), _char_roles(parsed)
        for c in range(lo, hi):
            ts.compared += 1
            ts.agree += mine.get(c, frozenset()) == theirs.get(c, frozenset())
        ts.add(ids, "sft", str(doc), tokens, spans, lo, hi)


def generation_tokens(
    ts: TokenSet,
    generations: list[tuple[str, str, str]],
    encode: Callable[[str], list[int]],
    decode: Callable[[Sequence[int]], list[str]],
) -> None:
    """Add generations ``(id, prompt, completion)`` with the parser's roles."""
    for gid, prompt, completion in generations:
        text = prompt + completion
        ids = encode(text)
        tokens = decode(ids)
        if "".join(tokens) != text:
            raise GroundTruthError(
                f"generation {gid}: the tokenizer does not round-trip its text, "
                "so roles cannot be placed on tokens"
            )
        lo, hi = _offsets(text)
        spans = parse_completion(text, THINK_MARKER, ANSWER_MARKER, END)
        ts.add(ids, "generation", gid, tokens, spans, lo, hi)


def stacked_roles(ts: TokenSet) -> np.ndarray:
    """bool [T, R] over every token of every sequence, in order."""
    if not ts.roles:
        return np.zeros((0, len(ROLES)), dtype=bool)
    return np.concatenate(ts.roles)
