"""Greedy benchmark generations graded as evaluation grades them (rules
`steering_sweep` and `feature_accuracy`).

Whatever edit the caller has switched on (a steering shift, an ablated
component, a removed SAE feature) applies to every forward of the
generation; this module only decodes, grades and counts backtracking words.
"""

from __future__ import annotations

import re

import numpy as np

from lorascope.core.decoding import Completion, build_prompts, generate_hf
from lorascope.core.grading import grade

__all__ = ["backtrack_stats", "completion_stats", "graded_generations"]


def backtrack_stats(
    texts: list[str], n_tokens: list[int], words: list[str]
) -> dict[str, float]:
    """Backtracking words per 1000 generated tokens, and share of samples with any."""
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b")
    counts = [len(pattern.findall(t)) for t in texts]
    return {
        "backtrack_count": int(sum(counts)),
        "backtrack_per_1k_tokens": 1000.0 * sum(counts) / max(sum(n_tokens), 1),
        "backtrack_frac_samples": float(np.mean([c > 0 for c in counts])),
    }


def completion_stats(comps: list[Completion], words: list[str]) -> dict[str, float]:
    """Mean length, truncated share and backtracking of a set of completions."""
    n_gen = [c.n_generated_tokens for c in comps]
    return {
        "mean_generated_tokens": float(np.mean(n_gen)),
        "truncated_frac": float(np.mean([c.truncated for c in comps])),
        **backtrack_stats([c.text for c in comps], n_gen, words),
    }


def graded_generations(
    model,
    tokenizer,
    bench_rows: list[dict],
    *,
    max_new_tokens: int,
    batch_size: int,
    system: str | None = None,
    fallback: bool = True,
    on_batch=None,
) -> tuple[np.ndarray, list[Completion]]:
    """Greedy completions of the benchmark rows and whether each is correct.

    Grading passes `truncated` (a completion cut at its budget without an
    answer is wrong) and eval.grade_without_answer_marker as `fallback`;
    `on_batch` goes to `generate_hf` (per-row edits).
    """
    prompts = build_prompts(tokenizer, [r["problem"] for r in bench_rows], system)
    comps = generate_hf(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        names=[f"problem {r.get('id', i)!r}" for i, r in enumerate(bench_rows)],
        progress=False,
        on_batch=on_batch,
    )
    correct = np.array(
        [
            grade(row, c.text, truncated=c.truncated, fallback=fallback).correct
            for row, c in zip(bench_rows, comps, strict=True)
        ],
        dtype=bool,
    )
    return correct, comps
