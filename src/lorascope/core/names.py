"""What a configured name refers to: the embedded toy world or something else.

Used by the config checks, the data and evaluation stages and the rule files,
so "is this the toy?" is answered in one place.
"""

from __future__ import annotations

__all__ = ["TOY", "is_toy", "is_toy_benchmark"]

# model.base, model.full_finetune's sibling and data.dataset use this name for
# the embedded world (rules toy_base_model, toy_sft).
TOY = "toy"


def is_toy(name: str | None) -> bool:
    """Whether a model or dataset name is the embedded toy world's."""
    return name == TOY


def is_toy_benchmark(name: str) -> bool:
    """Whether a benchmark name is one of toy.benchmarks (rule toy_bench)."""
    return name.startswith("toy_")
