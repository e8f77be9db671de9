"""Explanations and monosemanticity classes per feature (rule autointerp_explain).

`explain_kind(features, contexts, section, run, cache_path, kind)` returns one
row per feature of features.parquet (none is dropped) and the usage rows:

    feature:i64, kind, label, explanation:str?, classification:i8? (0 specific,
    1 broad but every example fits, 2 polysemantic), reasoning:str?,
    status ("ok" | "failed" | "no_contexts"), error:str?, raw:str? (the reply),
    n_contexts:i32, explainer ("offline" or "provider:model")
"""

from __future__ import annotations

import polars as pl

from lorascope.autointerp.clients import run_prompts
from lorascope.autointerp.offline import explain_offline
from lorascope.autointerp.prompts import (
    ParseError,
    extract_json,
    format_activation_examples,
    load_templates,
    render,
)
from lorascope.autointerp.settings import llm_settings
from lorascope.core.feature_tables import (
    FEATURE_COLS,
    check_columns,
    contexts_by_feature,
)

__all__ = ["parse_explanation", "explain_kind", "EXPLANATION_SCHEMA"]

EXPLANATION_SCHEMA = {
    "feature": pl.Int64,
    "kind": pl.String,
    "label": pl.String,
    "explanation": pl.String,
    "classification": pl.Int8,
    "reasoning": pl.String,
    "status": pl.String,
    "error": pl.String,
    "raw": pl.String,
    "n_contexts": pl.Int32,
    "explainer": pl.String,
}


def parse_explanation(text: str) -> dict:
    obj = extract_json(text)
    expl, cls = obj.get("explanation"), obj.get("classification")
    if not isinstance(expl, str) or not expl.strip():
        raise ParseError(f"no 'explanation' string in {text[:200]!r}")
    if isinstance(cls, str) and cls.strip().isdigit():
        cls = int(cls.strip())
    if isinstance(cls, bool) or not isinstance(cls, int) or cls not in (0, 1, 2):
        raise ParseError(f"'classification' must be 0, 1 or 2, got {cls!r}")
    reason = obj.get("classification_reasoning") or obj.get("reasoning") or ""
    return {"explanation": expl.strip(), "classification": cls, "reasoning": reason}


def explain_kind(
    features: pl.DataFrame,
    contexts: pl.DataFrame,
    section: dict,
    run: str,
    cache_path,
    kind: str,
) -> tuple[pl.DataFrame, list[dict]]:
    check_columns(features, FEATURE_COLS, f"features/{kind}/features.parquet")
    settings = llm_settings(section, run, "explainer")
    by_feature = contexts_by_feature(
        contexts, section["n_contexts"], f"features/{kind}/contexts.parquet"
    )
    offline_cfg = section["offline"]
    templates = None if settings.offline else load_templates(section["prompts"])
    rows, prompts = {}, []
    for f in features.sort("feature").iter_rows(named=True):
        fid, ctxs = int(f["feature"]), by_feature.get(int(f["feature"]), [])
        row = dict.fromkeys(EXPLANATION_SCHEMA)
        row.update(
            feature=fid,
            kind=kind,
            label=f["label"],
            n_contexts=len(ctxs),
            explainer=settings.label,
            status="ok",
        )
        rows[fid] = row
        if not ctxs:
            row.update(status="no_contexts", error="feature has no contexts")
        elif settings.offline:
            got = explain_offline(
                ctxs, offline_cfg["specific_share"], offline_cfg["broad_share"]
            )
            row.update(
                explanation=got["explanation"],
                classification=got["classification"],
                reasoning=got["classification_reasoning"],
            )
        else:
            examples = format_activation_examples(ctxs, section["tokens_listed"])
            prompts.append((fid, render(templates["explain"], examples=examples)))
    outcomes, usage = run_prompts(
        settings, cache_path, f"explain_{kind}", prompts, parse_explanation
    )
    for fid, out in outcomes.items():
        rows[fid].update(status=out.status, error=out.error, raw=out.raw)
        if out.value is not None:
            rows[fid].update(out.value)
    return pl.DataFrame(list(rows.values()), schema=EXPLANATION_SCHEMA), usage
