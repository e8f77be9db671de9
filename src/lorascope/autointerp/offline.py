"""The offline explainer: explanations, classes, categories and a detection
judge computed from activation statistics alone (no LLM, no key).

Used by the autointerp rules when `autointerp.provider` (or
`autointerp.categories.provider`) is `offline`: the embedded default and CI.
Each feature's weight on a token is its activation at the window's max token
(clipped at 0), summed over its top contexts. An explanation names the
dominant token(s) with their share of that weight, or a token class, or a
position pattern; the class follows from the same concentration measures.
Every output carries `explainer: offline`.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

__all__ = [
    "TAXONOMY",
    "norm_token",
    "token_class",
    "feature_stats",
    "explain_offline",
    "judge_offline",
]

DISCOURSE = {
    "wait", "hmm", "so", "but", "alternatively", "therefore", "thus", "let",
    "check", "maybe", "actually", "okay", "ok", "now", "first", "next", "then",
    "however", "hence", "perhaps", "verify", "because", "since", "answer",
    "suppose", "recall", "compute", "again", "also",
}  # fmt: skip
# category -> (name, definition, {subcategory: definition})
TAXONOMY = {
    "numbers": ("Numbers", "Digits and numerals.", {
        "single_digit": "One digit.", "multi_digit": "Numbers of two or more digits."}),
    "math_symbols": ("Mathematical Symbols", "Operators, LaTeX and brackets.", {
        "operators": "Arithmetic, comparison and equality signs.",
        "latex": "LaTeX commands and dollar delimiters.",
        "brackets": "Parentheses, brackets and braces."}),
    "punctuation": ("Punctuation", "Sentence and clause punctuation.", {
        "sentence_end": "Full stops, question and exclamation marks.",
        "separators": "Commas, colons and semicolons.",
        "other_punct": "Quotes, dashes and other marks."}),
    "formatting": ("Formatting and Markers", "Whitespace and special tokens.", {
        "whitespace": "Newlines and spaces.",
        "special_markers": "Chat/think markers and markdown."}),
    "discourse": ("Reasoning Discourse", "Words that steer the reasoning.", {
        "discourse_markers": "Wait, so, but, therefore and similar."}),
    "words": ("Content Words", "Other words and word pieces.", {
        "capitalised": "Words starting with a capital.",
        "lowercase": "Other words and pieces."}),
}  # fmt: skip


def norm_token(token: str) -> str:
    """Comparison form: surrounding whitespace dropped, whitespace kept visible."""
    stripped = token.strip()
    if stripped:
        return stripped
    return token.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "␣") or "∅"


@lru_cache(maxsize=65536)  # pure; the scorers ask for every token of a window
def token_class(token: str) -> tuple[str, str]:
    """(category, subcategory) of a decoded token in TAXONOMY."""
    t = token.strip()
    if not t:
        return "formatting", "whitespace"
    if t.startswith("<|") or t.startswith(("##", "**", "```")):
        return "formatting", "special_markers"
    if t.isdigit():
        return "numbers", "single_digit" if len(t) == 1 else "multi_digit"
    if t.startswith("\\") or t in ("$", "$$"):
        return "math_symbols", "latex"
    if all(ch in "+-*/=<>^×÷±≤≥≠" for ch in t):
        return "math_symbols", "operators"
    if all(ch in "()[]{}" for ch in t):
        return "math_symbols", "brackets"
    if all(ch in ".!?" for ch in t):
        return "punctuation", "sentence_end"
    if all(ch in ",;:" for ch in t):
        return "punctuation", "separators"
    if not any(ch.isalnum() for ch in t):
        return "punctuation", "other_punct"
    if t.lower().strip(",.") in DISCOURSE:
        return "discourse", "discourse_markers"
    return "words", "capitalised" if t[0].isupper() else "lowercase"


def _shares(weights: Counter) -> list[tuple[str, float]]:
    total = sum(weights.values())
    return [(k, v / total) for k, v in weights.most_common()] if total > 0 else []


def feature_stats(contexts: list[dict]) -> dict:
    """Concentration measures over one feature's contexts (strongest first)."""
    w = [max(float(c["acts"][c["center"]]), 0.0) for c in contexts]
    if sum(w) <= 0:  # nothing positive: weigh each context equally
        w = [1.0] * len(contexts)
    tok, prev, cls, sub = Counter(), Counter(), Counter(), Counter()
    early = 0.0
    for c, wi in zip(contexts, w, strict=True):
        center_tok = c["tokens"][c["center"]]
        tok[norm_token(center_tok)] += wi
        if c["center"] > 0:
            prev[norm_token(c["tokens"][c["center"] - 1])] += wi
        cat, subcat = token_class(center_tok)
        cls[cat] += wi
        sub[(cat, subcat)] += wi
        early += wi if int(c["pos"]) < 4 else 0.0
    tokens = _shares(tok)
    return {
        "tokens": tokens,
        "top3_share": sum(s for _, s in tokens[:3]),
        "prev": _shares(prev),
        "classes": _shares(cls),
        "subclasses": _shares(sub),
        "early_share": early / sum(w),
        "n": len(contexts),
    }


def _q(token: str) -> str:
    return '"' + (token[:20] + "…" if len(token) > 20 else token) + '"'


def explain_offline(
    contexts: list[dict], specific_share: float, broad_share: float
) -> dict:
    """{explanation, classification, classification_reasoning} for one feature."""
    st = feature_stats(contexts)
    (top, share), n = st["tokens"][0], st["n"]
    pct = lambda x: f"{round(100 * x)}%"  # noqa: E731
    if share >= specific_share:
        text, cls = f"token {_q(top)} ({pct(share)} of top activation)", 0
        if st["prev"] and st["prev"][0][1] >= specific_share:
            text = f"token {_q(top)} after {_q(st['prev'][0][0])} ({pct(share)})"
        why = f"one token holds {pct(share)} of the weight over {n} contexts"
    elif st["top3_share"] >= broad_share:
        toks = ", ".join(_q(t) for t, _ in st["tokens"][:3])
        text, cls = f"tokens {toks} ({pct(st['top3_share'])})", 1
        why = f"three tokens hold {pct(st['top3_share'])} of the weight"
    elif st["subclasses"][0][1] >= broad_share:
        (cat, sub), s = st["subclasses"][0]
        toks = ", ".join(_q(t) for t, _ in st["tokens"][:2])
        text, cls = f"{sub.replace('_', ' ')} tokens, e.g. {toks} ({pct(s)})", 1
        why = f"one token class ({cat}/{sub}) holds {pct(s)} of the weight"
    elif st["classes"][0][1] >= broad_share:
        cat, s = st["classes"][0]
        toks = ", ".join(_q(t) for t, _ in st["tokens"][:2])
        text, cls = f"{cat.replace('_', ' ')} tokens, e.g. {toks} ({pct(s)})", 1
        why = f"one token class ({cat}) holds {pct(s)} of the weight"
    elif st["early_share"] >= broad_share:
        text, cls = f"tokens near document start ({pct(st['early_share'])})", 1
        why = "activations concentrate in the first four positions"
    else:
        toks = ", ".join(_q(t) for t, _ in st["tokens"][:3])
        text, cls = f"mixed tokens, e.g. {toks}", 2
        why = f"top token holds only {pct(share)}; no class or position dominates"
    return {
        "explanation": text,
        "classification": cls,
        "classification_reasoning": why,
    }


_QUOTED = re.compile(r'"([^"]+)"')
_SUBCLASS_WORDS = {
    sub.replace("_", " "): (cat, sub)
    for cat, (_, _, subs) in TAXONOMY.items()
    for sub in subs
}


@lru_cache(maxsize=4096)
def _terms(explanation: str):
    """(quoted tokens, words, named token classes) of an explanation; cached,
    since the fuzzing and simulation scorers ask once per window."""
    quoted = tuple(_QUOTED.findall(explanation))
    words = set(re.findall(r"[\w']+", explanation.lower()))
    low = explanation.lower()
    named = {v for k, v in _SUBCLASS_WORDS.items() if k in low}
    named |= {
        (cat, sub)
        for cat, (_, _, subs) in TAXONOMY.items()
        if f"{cat.replace('_', ' ')} tokens" in low
        for sub in subs
    }
    return quoted, frozenset(words), frozenset(named)


def judge_offline(explanation: str, marked_tokens: list[str]) -> list[bool]:
    """Predict, per window, whether the feature fires on its marked token.

    Fires if the token is quoted in the explanation (or, with no quotes, is
    one of its words), or if the explanation names the token's subclass.
    """
    quoted, words, named = _terms(explanation)
    out = []
    for tok in marked_tokens:
        t = norm_token(tok)
        hit = (
            any(t == q or (q.endswith("…") and t.startswith(q[:-1])) for q in quoted)
            if quoted
            else t.lower() in words
        )
        out.append(hit or token_class(tok) in named)
    return out
