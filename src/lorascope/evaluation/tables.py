"""Tables 1 and 2 with bootstrap intervals (rules `eval_table1`, `eval_table2`).

Table 1: accuracy of base, rank-1 LoRA and full fine-tune per benchmark, and
recovery = (rank1 - base) / (full - base), the paper's formula.
Table 2: accuracy of the rank-1 LoRA and its attention- and MLP-ablated
versions, each ablated variant's recovery relative to the LoRA's own gain:
(ablated - base) / (rank1 - base).

Table 1 also reports the adapter's trainable-parameter fraction (paper §2:
"less than 0.03% as many trainable parameters as the base model"): adapter
parameters counted from the adapter file's safetensors header, base
parameters from the base model's safetensors headers (a local directory) or
from its config on the meta device (a hub id): no weights are loaded.

Beyond the paper: a paired percentile bootstrap over problems (the same
resampled problems for every variant) gives a 95% interval for each accuracy
and recovery. A recovery whose denominator is zero or negative is undefined
(null), never a number; its interval uses only the resamples where it is
defined, and `*_defined` reports that share so a reader sees how often the
gain it divides by vanished.

Both tables record how the variants were prompted (`eval.think_prefill`) and
generated (`eval.budget_forcing`: off = the paper's protocol, or s1's budget
forcing): a `think_prefill` and a `budget_forcing` column, and a line each
under the markdown table.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

__all__ = [
    "PARAM_COLUMNS",
    "base_param_count",
    "safetensors_numel",
    "with_param_fraction",
    "bootstrap_table",
    "correct_matrix",
    "table1",
    "table2",
    "to_display",
    "to_markdown_report",
    "with_prompting",
]


def correct_matrix(
    frames: Mapping[str, pl.DataFrame], benchmark: str
) -> tuple[list[str], np.ndarray]:
    """Align per-variant eval frames by problem id: (ids, correct_VN bool)."""
    names = list(frames)
    ref = frames[names[0]].select("id").sort("id")
    rows = []
    for name in names:
        df = frames[name].select("id", "correct").sort("id")
        if df.height != ref.height or not df["id"].equals(ref["id"]):
            raise ValueError(
                f"{benchmark}: variant {name!r} graded different problems than "
                f"{names[0]!r} ({df.height} vs {ref.height} ids)"
            )
        rows.append(df["correct"].cast(pl.Boolean).to_numpy())
    return ref["id"].to_list(), np.stack(rows)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    ok = den > 0
    np.divide(num, den, out=out, where=ok)
    return out


def bootstrap_table(
    correct: Mapping[str, Mapping[str, np.ndarray]],
    ratios: Sequence[tuple[str, str, str, str]],
    *,
    n_boot: int,
    ci: float = 0.95,
    seed: int = 0,
) -> pl.DataFrame:
    """One row per benchmark: accuracies, ratios, percentile intervals.

    `correct[benchmark][variant]` is a bool array over that benchmark's
    problems (aligned across variants). `ratios` lists
    `(column, top, bottom, reference)`: column = (top - ref) / (bottom - ref).
    """
    rng = np.random.default_rng(seed)
    lo_q, hi_q = 50 * (1 - ci), 50 * (1 + ci)
    rows = []
    for bench, by_variant in correct.items():
        names = list(by_variant)
        correct_VN = np.stack([np.asarray(by_variant[v], float) for v in names])
        n = correct_VN.shape[1]
        if n == 0:
            raise ValueError(f"{bench}: no graded problems")
        idx_BN = rng.integers(0, n, size=(n_boot, n))
        boot_VB = correct_VN[:, idx_BN].mean(axis=-1)  # paired resamples
        acc_V = correct_VN.mean(axis=1)
        row: dict = {"benchmark": bench, "n": n}
        for v, name in enumerate(names):
            lo, hi = np.percentile(boot_VB[v], [lo_q, hi_q])
            row |= {name: acc_V[v], f"{name}_lo": lo, f"{name}_hi": hi}
        for col, top, bottom, ref in ratios:
            t, b, r = (names.index(x) for x in (top, bottom, ref))
            point = _ratio(acc_V[t] - acc_V[r], acc_V[b] - acc_V[r])
            boot = _ratio(boot_VB[t] - boot_VB[r], boot_VB[b] - boot_VB[r])
            defined = ~np.isnan(boot)
            lo = hi = None
            if np.isfinite(point) and defined.any():
                lo, hi = np.percentile(boot[defined], [lo_q, hi_q])
            row |= {
                col: float(point) if np.isfinite(point) else None,
                f"{col}_lo": lo,
                f"{col}_hi": hi,
                f"{col}_defined": float(defined.mean()),
            }
        rows.append(
            {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}
        )
    return pl.DataFrame(rows, infer_schema_length=None)


def table1(correct, *, n_boot: int, ci: float = 0.95, seed: int = 0):
    """Table 1: base / rank1 / full and recovery (rank1 - base)/(full - base)."""
    sub = {b: {v: c[v] for v in ("base", "rank1", "full")} for b, c in correct.items()}
    return bootstrap_table(
        sub, [("recovery", "rank1", "full", "base")], n_boot=n_boot, ci=ci, seed=seed
    )


TABLE2_VARIANTS = ("base", "rank1", "rank1-attn-ablated", "rank1-mlp-ablated")


def table2(correct, *, n_boot: int, ci: float = 0.95, seed: int = 0):
    """Table 2: ablated variants relative to the LoRA's gain over the base."""
    sub = {b: {v: c[v] for v in TABLE2_VARIANTS} for b, c in correct.items()}
    ratios = [
        ("attn_ablated_recovery", "rank1-attn-ablated", "rank1", "base"),
        ("mlp_ablated_recovery", "rank1-mlp-ablated", "rank1", "base"),
    ]
    return bootstrap_table(sub, ratios, n_boot=n_boot, ci=ci, seed=seed)


PARAM_COLUMNS = ("adapter_params", "base_params", "trainable_fraction")


def safetensors_numel(path: str | Path) -> int:
    """Number of parameters in a .safetensors file, from its header alone."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    # math.prod: Python integers, exact for any size (no numpy dtype to overflow).
    return sum(
        math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__"
    )


def base_param_count(path: str, revision: str | None = None) -> tuple[int, str]:
    """(parameters of the base model, how counted), loading no weights.

    A local directory: its safetensors headers (tied weights are stored
    once). A hub id: its config instantiated on the meta device.
    """
    # A hub id (or any path that is not a directory) globs to nothing.
    files = sorted(Path(path).glob("*.safetensors"))
    if files:
        return sum(safetensors_numel(f) for f in files), "safetensors headers"
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, revision=revision)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()), "config"


def with_param_fraction(
    table: pl.DataFrame, adapter_params: int, base_params: int
) -> pl.DataFrame:
    """Table 1 plus the adapter's trainable-parameter fraction (every row)."""
    if base_params <= 0:
        raise ValueError(f"base model has {base_params} parameters")
    return table.with_columns(
        adapter_params=pl.lit(adapter_params, pl.Int64),
        base_params=pl.lit(base_params, pl.Int64),
        trainable_fraction=pl.lit(adapter_params / base_params, pl.Float64),
    )


def _cell(value, lo, hi, pct: bool) -> str:
    """'value [lo, hi]': a recovery in percent, an accuracy as a fraction; no
    brackets unless both bounds are there."""
    if value is None:
        return "undefined"
    text = f"{100 * value:.2f}%" if pct else f"{value:.4f}"
    if lo is None or hi is None:
        return text
    if pct:
        return text + f" [{100 * lo:.2f}, {100 * hi:.2f}]"
    return text + f" [{lo:.3f}, {hi:.3f}]"


def to_display(table: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Human view: 'value [lo, hi]' per column; recoveries in percent."""
    out = {"benchmark": table["benchmark"].to_list(), "n": table["n"].to_list()}
    for col in columns:
        pct = "recovery" in col
        out[col] = [
            _cell(r[col], r[f"{col}_lo"], r[f"{col}_hi"], pct)
            for r in table.iter_rows(named=True)
        ]
    return pl.DataFrame(out)


TITLES = {
    "table1": "Table 1: base, rank-1 LoRA and full fine-tune; "
    "recovery = (rank1 - base) / (full - base)",
    "table2": "Table 2: rank-1 LoRA with attention / MLP components ablated; "
    "recovery = (ablated - base) / (rank1 - base)",
}


def with_prompting(
    table: pl.DataFrame, think_prefill: str, budget_forcing: str | None = None
) -> pl.DataFrame:
    """The table with the eval.think_prefill its variants were prompted with
    and, given, how they were generated (`core.forcing.describe`)."""
    table = table.with_columns(think_prefill=pl.lit(think_prefill))
    if budget_forcing is not None:
        table = table.with_columns(budget_forcing=pl.lit(budget_forcing))
    return table


def to_markdown_report(
    table: pl.DataFrame,
    which: str,
    ci: float,
    n_boot: int,
    prompting: str | None = None,
    generation: str | None = None,
    rank: int = 1,
) -> str:
    """The markdown file of a table: title, 'value [lo, hi]' cells, a legend
    and, given `prompting` and `generation`, lines saying how the variants
    were prompted and generated (eval.budget_forcing). `rank`: the LoRA's
    (a sweep member's; its variant is still called rank1)."""
    from lorascope.core.io import to_markdown

    shown = [
        c
        for c in table.columns
        if c
        not in ("benchmark", "n", "think_prefill", "budget_forcing", *PARAM_COLUMNS)
        and not c.endswith(("_lo", "_hi", "_defined"))
    ]
    note = f"Prompts (eval.think_prefill): {prompting}.\n" if prompting else ""
    if generation:
        note += f"Generation (eval.budget_forcing): {generation}.\n"
    params = ""
    if "trainable_fraction" in table.columns and table.height:
        row = table.row(0, named=True)
        params = (
            f"\nTrainable parameters of the adapter: {row['adapter_params']:,} of "
            f"the base model's {row['base_params']:,} "
            f"({100 * row['trainable_fraction']:.4f}%; paper: less than 0.03%).\n"
        )
    return (
        f"# {TITLES[which].replace('rank-1 LoRA', f'rank-{rank} LoRA')}\n\n"
        + to_markdown(to_display(table, shown))
        + f"\nBrackets: {ci:.0%} paired bootstrap intervals over problems "
        f"({n_boot} resamples). 'undefined': the gain divided by is zero or "
        "negative.\n" + note + params
    )
