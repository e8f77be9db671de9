"""Functional categories and per-feature assignments (rules
autointerp_categories and autointerp_assign).

`propose_categories` makes one call on an equal-size seeded sample of LoRA and
MLP explanations (5-8 categories), then one call splitting each category into
subcategories from a sample of SAE explanations. With
`autointerp.categories.sae_taxonomy: own` the SAE features get top-level
categories of their own, proposed from the SAE sample (the paper's Fig 2
names SAE-specific ones; the public code used a separate hierarchical
category file for them), stored as `sae_categories` in categories.json;
`shared` (default) splits the LoRA/MLP categories. `assign_kind` puts every
feature into one category (SAE: one `category/subcategory` pair). Offline, the
categories are the token-class taxonomy of `offline.TAXONOMY` (for every
kind, whatever `sae_taxonomy` says) and a feature's category is the class
holding most of its top-activation weight.

assignments/{kind}.parquet: feature:i64, kind, category:str?, subcategory:str?,
status ("ok" | "failed" | "no_contexts" | "few_contexts"), error:str?,
raw:str?, explainer. Features whose explanation was left out (no or too few
contexts) keep that status.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from lorascope.autointerp.clients import run_prompts
from lorascope.autointerp.explain import EXCLUDED
from lorascope.autointerp.offline import TAXONOMY, feature_stats
from lorascope.autointerp.prompts import (
    ParseError,
    extract_json,
    format_marked,
    load_templates,
    render,
)
from lorascope.autointerp.settings import llm_settings
from lorascope.core.feature_tables import contexts_by_feature

__all__ = ["propose_categories", "assign_kind", "parse_category_id", "ASSIGN_SCHEMA"]

ASSIGN_SCHEMA = {
    "feature": pl.Int64,
    "kind": pl.String,
    "category": pl.String,
    "subcategory": pl.String,
    "status": pl.String,
    "error": pl.String,
    "raw": pl.String,
    "explainer": pl.String,
}


def _sample(expl: pl.DataFrame, n: int, seed: int) -> list[str]:
    ok = expl.filter(pl.col("status") == "ok")["explanation"].to_list()
    idx = np.random.default_rng(seed).permutation(len(ok))[:n]
    return [ok[i] for i in sorted(idx)]


def _parse_categories(text: str) -> dict:
    obj = extract_json(text)
    cats = obj.get("categories")
    if not isinstance(cats, list) or not cats:
        raise ParseError("no 'categories' list")
    for c in cats:
        if not isinstance(c, dict) or not re.fullmatch(
            r"[a-z0-9_]+", str(c.get("string_id", ""))
        ):
            raise ParseError(f"category without a snake_case string_id: {c!r}")
    return obj


def _parse_subcategories(text: str) -> dict:
    subs = extract_json(text).get("subcategories")
    if not isinstance(subs, dict):
        raise ParseError("no 'subcategories' object")
    return subs


def propose_categories(
    explanations: dict[str, pl.DataFrame], section: dict, run: str, cache_path
):
    """categories.json content and usage rows. `explanations`: kind -> frame."""
    cfg, seed = section["categories"], section["seed"]
    settings = llm_settings(section, run, "categorizer")
    n = min(
        cfg["sample_per_kind"],
        *(int((explanations[k]["status"] == "ok").sum()) for k in ("lora", "mlp")),
    )
    sample = _sample(explanations["lora"], n, seed) + _sample(
        explanations["mlp"], n, seed + 1
    )
    sae_sample = _sample(explanations["sae"], cfg["sae_sample"], seed + 2)
    out = {
        "explainer": settings.label,
        "sample": {"lora": n, "mlp": n, "sae": len(sae_sample)},
    }
    if settings.offline:
        cats = [
            {
                "string_id": cid,
                "name": name,
                "definition": d,
                "examples": [],
                "subcategories": [
                    {"string_id": s, "name": s.replace("_", " "), "definition": sd}
                    for s, sd in subs.items()
                ],
            }
            for cid, (name, d, subs) in TAXONOMY.items()
        ]
        return {
            **out,
            "categories": cats,
            "summary": "offline: fixed token-class taxonomy",
        }, []
    t = load_templates(
        section["prompts"], ["categories", "subcategories", "sae_categories"]
    )
    call = _Caller(settings, cache_path, cfg)
    proposal = call.categories(t["categories"], sample, "categories")
    cats = proposal["categories"]
    result = {**out, "categories": cats, "summary": proposal.get("summary", "")}
    if cfg["sae_taxonomy"] == "own":
        own = call.categories(t["sae_categories"], sae_sample, "sae_categories")
        result["sae_categories"] = own["categories"]
        result["sae_summary"] = own.get("summary", "")
    sae_cats = result.get("sae_categories", cats)
    subs = call.subcategories(t["subcategories"], sae_cats, sae_sample)
    for c in sae_cats:
        c["subcategories"] = [
            s
            for s in subs.get(c["string_id"]) or []
            if isinstance(s, dict) and s.get("string_id")
        ]
    if "sae_categories" in result:
        for c in cats:  # LoRA/MLP categories are never split
            c["subcategories"] = []
    return result, call.usage


class _Caller:
    """The proposal calls of one run, failing loudly, usage collected."""

    def __init__(self, settings, cache_path, cfg: dict):
        self.settings, self.cache_path, self.cfg = settings, cache_path, cfg
        self.usage: list[dict] = []

    def _one(self, step: str, prompt: str, parse):
        got, usage = run_prompts(
            self.settings, self.cache_path, step, [(step, prompt)], parse
        )
        self.usage += usage
        if got[step].status != "ok":
            raise RuntimeError(
                f"{step} proposal failed ({got[step].error}); raw reply: "
                f"{got[step].raw!r}. Raise autointerp.parse_retries or change "
                "autointerp.categories.model; answered calls stay cached."
            )
        return got[step].value

    def categories(self, template, sample: list[str], step: str) -> dict:
        listing = "\n".join(f"- {e}" for e in sample)
        prompt = render(
            template,
            feature_list=listing,
            n_min=self.cfg["n_min"],
            n_max=self.cfg["n_max"],
        )
        return self._one(step, prompt, _parse_categories)

    def subcategories(self, template, cats: list[dict], sample: list[str]) -> dict:
        cat_list = "\n".join(
            f"- {c['string_id']}: {c.get('name', '')}: {c.get('definition', '')}"
            for c in cats
        )
        prompt = render(
            template,
            categories=cat_list,
            feature_list="\n".join(f"- {e}" for e in sample),
        )
        return self._one("subcategories", prompt, _parse_subcategories)


def _choices(categories: dict, kind: str) -> list[tuple[str, str | None, str]]:
    """(category, subcategory, line shown to the model) per allowed answer."""
    out = []
    cats = categories["categories"]
    if kind == "sae":
        cats = categories.get("sae_categories") or cats
    for c in cats:
        subs = (c.get("subcategories") or []) if kind == "sae" else []
        if not subs:
            out.append(
                (c["string_id"], None, f"- {c['string_id']}: {c.get('definition', '')}")
            )
        for s in subs:
            out.append(
                (
                    c["string_id"],
                    s["string_id"],
                    f"- {c['string_id']}/{s['string_id']}: {s.get('definition', '')}",
                )
            )
    return out


def parse_category_id(text: str, ids: list[str]) -> str:
    """The one allowed id in a reply (bare, quoted or inside a short sentence)."""
    clean = text.strip().strip("`'\" .").lower()
    if clean in ids:
        return clean
    found = {
        i for i in ids if re.search(rf"(?<![\w/]){re.escape(i)}(?![\w/])", text.lower())
    }
    if len(found) == 1:
        return found.pop()
    raise ParseError(f"reply names {len(found)} of the allowed ids: {text[:200]!r}")


def assign_kind(explanations, contexts, categories, section, run, cache_path, kind):
    settings = llm_settings(section, run, "explainer")
    n_show = section["categories"]["n_examples"]
    by_feature = contexts_by_feature(
        contexts, None, f"features/{kind}/contexts.parquet"
    )
    choices = _choices(categories, kind)
    ids = [f"{c}/{s}" if s else c for c, s, _ in choices]
    rows, prompts = {}, []
    offline_cats = categories["explainer"] == "offline"
    if settings.offline and not offline_cats:
        raise ValueError(
            "autointerp.provider is offline but categories.json came from "
            f"{categories['explainer']}: set autointerp.categories.provider: offline "
            "too, or give autointerp.provider an LLM"
        )
    t = None if settings.offline else load_templates(section["prompts"], ["assign"])
    for e in explanations.sort("feature").iter_rows(named=True):
        fid, ctxs = int(e["feature"]), by_feature.get(int(e["feature"]), [])
        row = dict.fromkeys(ASSIGN_SCHEMA)
        row.update(feature=fid, kind=kind, status="ok", explainer=settings.label)
        rows[fid] = row
        if e["status"] in EXCLUDED:
            row.update(status=e["status"], error=e["error"])
        elif not ctxs:
            row.update(status="no_contexts", error="feature has no contexts")
        elif settings.offline or offline_cats:
            (cat, sub), _ = feature_stats(ctxs)["subclasses"][0]
            row.update(category=cat, subcategory=sub if kind == "sae" else None)
            row["explainer"] = "offline"
        elif e["status"] != "ok":
            row.update(status="failed", error=f"explanation {e['status']}")
        else:
            ex = "\n".join(
                format_marked(c["tokens"], c["center"]) for c in ctxs[:n_show]
            )
            prompts.append(
                (
                    fid,
                    render(
                        t["assign"],
                        explanation=e["explanation"],
                        examples=ex,
                        categories="\n".join(line for _, _, line in choices),
                    ),
                )
            )
    outcomes, usage = run_prompts(
        settings,
        cache_path,
        f"assign_{kind}",
        prompts,
        lambda text: parse_category_id(text, ids),
    )
    for fid, out in outcomes.items():
        rows[fid].update(status=out.status, error=out.error, raw=out.raw)
        if out.value is not None:
            cat, _, sub = out.value.partition("/")
            rows[fid].update(category=cat, subcategory=sub or None)
    return pl.DataFrame(list(rows.values()), schema=ASSIGN_SCHEMA), usage
