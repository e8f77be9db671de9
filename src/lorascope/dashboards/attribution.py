"""Attribution panels and behaviour-set pages of the dashboards (rule
`dashboards`; issue 28).

Reads `attribution/features.parquet` (per LoRA direction / SAE feature and
target: estimated effect of removing it, interval, support, rank) and, when
built, `attribution/sets.parquet` (behaviour sets: necessity / sufficiency
against random sets). Gives per (kind, feature) the rows of its attribution
table, per kind the support the index sorts by (`index_target`: the first
of backtrack / answer / loss present), and writes one page per behaviour
set (`sets/<target>.html`).
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import polars as pl

__all__ = ["attribution_views", "index_support", "index_target", "write_set_pages"]

NEED = ["kind", "feature", "target", "effect", "effect_lo", "effect_hi"]
NEED += ["support", "rank", "n_sequences"]
ORDER = ("backtrack", "answer", "loss")


def _check(df: pl.DataFrame, cols: list[str], name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"attribution/{name}.parquet: missing column(s) {missing}")


def attribution_views(kind: str, table: pl.DataFrame) -> dict[int, list[dict]]:
    """Per feature of `kind`: one row per target."""
    _check(table, NEED, "features")
    out: dict[int, list[dict]] = {}
    for row in (
        table.filter(pl.col("kind") == kind).sort("target").iter_rows(named=True)
    ):
        out.setdefault(row["feature"], []).append(row)
    return out


def index_target(table: pl.DataFrame) -> str | None:
    present = set(table["target"].to_list())
    return next((t for t in ORDER if t in present), None)


def index_support(kind: str, table: pl.DataFrame, target: str | None) -> dict:
    """feature -> support for `target` (what the index's column sorts by)."""
    if target is None:
        return {}
    part = table.filter((pl.col("kind") == kind) & (pl.col("target") == target))
    return dict(zip(part["feature"].to_list(), part["support"].to_list(), strict=True))


def write_set_pages(
    sets: pl.DataFrame, env: jinja2.Environment, out_dir: Path
) -> list[dict]:
    """One page per behaviour set (target); returns [{target, page}]."""
    _check(sets, ["target", "set", "test", "metric", "delta", "delta_lo",
                  "delta_hi", "latents"], "sets")  # fmt: skip
    (out_dir / "sets").mkdir(parents=True, exist_ok=True)
    page = env.get_template("sets.html.jinja")
    refs = sets.filter(pl.col("test") == "reference").drop("latents").to_dicts()
    out = []
    for target in [t for t in dict.fromkeys(sets["target"].to_list()) if t != "-"]:
        part = sets.filter(pl.col("target") == target)
        top = part.filter(pl.col("set") == "top")
        latents = top["latents"][0].to_list() if top.height else []
        path = f"sets/{target}.html"
        (out_dir / path).write_text(
            page.render(target=target, latents=latents,
                        top=top.drop("latents").to_dicts(),
                        rows=part.drop("latents").to_dicts(), refs=refs),
            encoding="utf-8",
        )  # fmt: skip
        out.append({"target": target, "page": path, "latents": latents})
    return out
