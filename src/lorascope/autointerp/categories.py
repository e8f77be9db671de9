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
feature into one category (SAE: one `category/subcategory` pair). The calls
go to the role's provider (`providers.PROVIDERS`); the offline one's
categories are the token-class taxonomy of `offline.TAXONOMY` (for every
kind, whatever `sae_taxonomy` says) and a feature's category is the class
holding most of its top-activation weight. Categories from such a fixed
taxonomy are assigned by the provider that made them.

assignments/{kind}.parquet: feature:i64, kind, category:str?, subcategory:str?,
status ("ok" | "failed" | "no_contexts" | "few_contexts"), error:str?,
raw:str?, explainer. Features whose explanation was left out (no or too few
contexts) keep that status.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from lorascope.autointerp.explain import EXCLUDED
from lorascope.autointerp.providers import PROVIDERS, provider_for
from lorascope.autointerp.settings import llm_settings
from lorascope.core.feature_tables import contexts_by_feature

__all__ = ["propose_categories", "assign_kind", "ASSIGN_SCHEMA"]

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


def propose_categories(
    explanations: dict[str, pl.DataFrame], section: dict, run: str, cache_path
):
    """categories.json content and usage rows. `explanations`: kind -> frame."""
    cfg, seed = section["categories"], section["seed"]
    categorizer = provider_for(
        llm_settings(section, run, "categorizer"), section, cache_path
    )
    n = min(
        cfg["sample_per_kind"],
        *(int((explanations[k]["status"] == "ok").sum()) for k in ("lora", "mlp")),
    )
    sample = _sample(explanations["lora"], n, seed) + _sample(
        explanations["mlp"], n, seed + 1
    )
    sae_sample = _sample(explanations["sae"], cfg["sae_sample"], seed + 2)
    out = {
        "explainer": categorizer.label,
        "sample": {"lora": n, "mlp": n, "sae": len(sae_sample)},
    }
    proposal, usage = categorizer.propose(sample, sae_sample)
    return {**out, **proposal}, usage


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


def assign_kind(explanations, contexts, categories, section, run, cache_path, kind):
    explainer = provider_for(llm_settings(section, run), section, cache_path)
    by_feature = contexts_by_feature(
        contexts, None, f"features/{kind}/contexts.parquet"
    )
    maker = PROVIDERS.get(categories["explainer"].partition(":")[0])
    if maker is not None and maker.fixed_taxonomy:  # only its maker assigns them
        assigner = maker(explainer.settings, section, cache_path)
    elif explainer.fixed_taxonomy:
        p = explainer.settings.provider
        raise ValueError(
            f"autointerp.provider is {p} but categories.json came from "
            f"{categories['explainer']}: set autointerp.categories.provider: {p} "
            "too, or give autointerp.provider an LLM"
        )
    else:
        assigner = explainer
    rows, items = {}, []
    for e in explanations.sort("feature").iter_rows(named=True):
        fid, ctxs = int(e["feature"]), by_feature.get(int(e["feature"]), [])
        row = dict.fromkeys(ASSIGN_SCHEMA)
        row.update(feature=fid, kind=kind, status="ok", explainer=explainer.label)
        rows[fid] = row
        if e["status"] in EXCLUDED:
            row.update(status=e["status"], error=e["error"])
        elif not ctxs:
            row.update(status="no_contexts", error="feature has no contexts")
        else:
            row["explainer"] = assigner.label
            items.append((e, ctxs))
    outcomes, usage = assigner.assign(
        f"assign_{kind}", items, _choices(categories, kind), kind
    )
    for fid, out in outcomes.items():
        rows[fid].update(status=out.status, error=out.error, raw=out.raw)
        if out.value is not None:
            cat, _, sub = out.value.partition("/")
            rows[fid].update(category=cat, subcategory=sub or None)
    return pl.DataFrame(list(rows.values()), schema=ASSIGN_SCHEMA), usage
