"""Who made the labels: the footer every label-based figure and dashboard shows.

Reads the `explainer` block of `autointerp/usage.json` (the autointerp
stage's artifact), so the figures and dashboards stages name the explainer
the same way without importing autointerp.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["explainer_label"]


def _who(value: Any) -> str:
    """'offline' / 'provider:model' from a str or a list of them."""
    items = [value] if isinstance(value, str) else list(value or [])
    return ", ".join(sorted(set(map(str, items)))) or "none"


def explainer_label(usage: Mapping[str, Any]) -> str:
    """Footer text naming who wrote the labels, from `autointerp/usage.json`.

    Reads `explainer: {explanations, categories, detection_judge}` as written by
    `lorascope.autointerp.summary.usage_summary` (each "offline" or
    "provider:model", the first and last as lists).
    """
    who = usage.get("explainer")
    if not isinstance(who, Mapping) or "explanations" not in who:
        raise KeyError(
            "autointerp/usage.json: expected 'explainer': {'explanations': ...}; "
            "figures need it to say which explainer made the labels "
            f"(got {who!r})"
        )
    parts = {k: _who(who.get(k)) for k in ("explanations", "categories")}
    if set(parts.values()) == {"offline"}:
        return "labels: offline explainer (activation statistics, no LLM)"
    if parts["categories"] in ("none", parts["explanations"]):
        return f"labels: {parts['explanations']}"
    return f"labels: {parts['explanations']}; categories: {parts['categories']}"
