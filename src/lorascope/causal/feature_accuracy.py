"""Benchmark accuracy with one SAE feature or one LoRA component removed during
generation (rule `feature_accuracy`; issue 18, beyond the paper).

Feature ablation KL (`lorascope.causal.feature_kl`) says how much the next
token distribution moves on training text; this asks whether the answers
change. Variants, each one greedy generation of the benchmark (HF backend):

- `full`: the rank-1 LoRA as trained;
- `floor`: every scalar replaced by its SAE reconstruction, the reference a
  removed SAE feature is compared with (as in the KL table);
- `sae` feature f: the reconstruction minus f's contribution, z_f x dir_f;
- `component` c: c's scalar zeroed (the KL ablation's edit), compared with
  `full`.

An SAE edit needs the scalars of the unedited LoRA at every new position. A
pre-hook on the decoder (`CleanScalars`) first runs the unedited decoder on
the same input with a KV cache of its own, records its scalars, and sets
their replacement for the edited forward that follows: two decoder passes per
step. The scalars are the unedited model's on the edited model's own tokens,
so "f's contribution" is defined as in the KL table (frozen replacement).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import torch
from transformers import DynamicCache

from lorascope.ablation.generation import completion_stats, graded_generations
from lorascope.ablation.scalar_control import ScalarControl
from lorascope.causal.feature_kl import SaeMap
from lorascope.core.components import table_rank
from lorascope.core.memory import ModelShape, fit_batch, generation_bytes

__all__ = [
    "CleanScalars",
    "Variant",
    "accuracy_table",
    "choose_variants",
    "fitting_batch",
    "run_variants",
]


class CleanScalars:
    """Context: before each decoder forward, run the unedited decoder on the same
    input (own KV cache) and set `control.set_VTC = edit(scalars_BTC)`."""

    def __init__(
        self,
        model,
        control: ScalarControl,
        edit: Callable[[torch.Tensor], torch.Tensor],
    ):
        self.control, self.edit = control, edit
        self.decoder = model.get_base_model().get_decoder()
        self._cache = None
        self._inside = False
        self._handle = None

    def _pre_hook(self, module, args, kwargs):
        if self._inside:
            return None
        if args:
            raise ValueError("feature ablation needs the decoder's inputs as keywords")
        past = kwargs.get("past_key_values")
        if past is None or past.get_seq_length() == 0:  # a new generate call
            self._cache = DynamicCache(config=module.config)
        control = self.control
        control.set_VTC, control.record = None, True
        self._inside = True
        try:
            module(**{**kwargs, "past_key_values": self._cache, "use_cache": True})
            scalars_BTC = control.recorded()
        finally:
            self._inside, control.record = False, False
        control.set_VTC = self.edit(scalars_BTC)
        return None

    def __enter__(self) -> CleanScalars:
        self.control.clear()
        self._handle = self.decoder.register_forward_pre_hook(
            self._pre_hook, with_kwargs=True
        )
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self._cache = None
        self.control.clear()


def sae_edit(
    sae_map: SaeMap, latent: int | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """scalars -> reconstruction (latent None) or reconstruction minus the
    latent's contribution, on the scalars' device and dtype."""

    def edit(scalars_BTC: torch.Tensor) -> torch.Tensor:
        b, t, c = scalars_BTC.shape
        z_NF, recon_NC = sae_map.codes(scalars_BTC.reshape(b * t, c))
        if latent is not None:
            recon_NC = recon_NC - z_NF[:, latent, None] * sae_map.dir_FC[latent]
        return recon_NC.reshape(b, t, c).to(scalars_BTC)

    return edit


class Variant:
    """One generation: `kind` reference | sae | component, and its edit."""

    def __init__(self, kind: str, id: str, label: str, reference: str, **extra):
        self.kind, self.id, self.label, self.reference = kind, id, label, reference
        self.extra = extra

    @property
    def name(self) -> str:
        return self.id if self.kind == "reference" else f"{self.kind}:{self.id}"


def choose_variants(
    feature_kl: pl.DataFrame, kl_components: pl.DataFrame, top_n: int
) -> list[Variant]:
    """full, floor, the top-n SAE features by ablation KL (only features that
    fire) and the top-n components by ablation KL."""
    rank = table_rank(kl_components)
    out = [
        Variant("reference", "full", f"rank-{rank} LoRA", "full"),
        Variant("reference", "floor", "SAE reconstruction", "full"),
    ]
    sae = feature_kl.filter((pl.col("kind") == "sae") & (pl.col("frac_active") > 0))
    for row in sae.sort("kl_mean", descending=True).head(top_n).iter_rows(named=True):
        out.append(
            Variant(
                "sae", str(row["latent"]), row["label"] or f"latent {row['latent']}",
                "floor", latent=int(row["latent"]), feature=int(row["feature"]),
                kl_mean=float(row["kl_mean"]),
            )
        )  # fmt: skip
    comps = kl_components.sort("kl_mean", descending=True).head(top_n)
    for row in comps.iter_rows(named=True):
        # the module's path, and for a rank > 1 adapter which of its
        # directions (`#s`, as in every other table's labels)
        label = row["name"] + (f"#{row['rank_slot']}" if rank > 1 else "")
        out.append(
            Variant(
                "component", str(row["index"]), label, "full",
                component=int(row["index"]), kl_mean=float(row["kl_mean"]),
            )
        )  # fmt: skip
    return out


def fitting_batch(model, max_new_tokens: int, cap: int, fallback: int) -> int:
    """Prompts per generate call that fit the card the loaded model is on,
    leaving 10% of it free: two KV caches per prompt (edited and clean pass;
    the resource model's formula, lorascope.core.memory.generation_bytes,
    with a 300-token prompt). `fallback` off CUDA."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return fallback
    free, total = torch.cuda.mem_get_info(device)
    shape = ModelShape.from_config(model.config.to_dict())
    nbytes = torch.finfo(next(model.parameters()).dtype).bits // 8
    per_prompt = generation_bytes(shape, 300, max_new_tokens, nbytes, caches=2)
    return fit_batch(free - 0.1 * total, 0, per_prompt, cap)


def run_variants(
    model,
    tokenizer,
    control: ScalarControl,
    sae_map: SaeMap,
    variants: list[Variant],
    bench_rows: list[dict],
    *,
    words: list[str],
    **gen,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Generate once per variant: correctness per problem, and per variant its
    backtracking and length statistics. `gen`: graded_generations' keywords."""
    correct, stats = {}, {}
    for v in variants:
        control.clear()
        try:
            if v.kind == "component":
                mult_1C = torch.ones(1, control.n_components)
                mult_1C[0, v.extra["component"]] = 0.0
                control.mult_VC = mult_1C
            if v.kind == "component" or v.id == "full":
                ok, comps = graded_generations(model, tokenizer, bench_rows, **gen)
            else:
                latent = v.extra.get("latent")
                with CleanScalars(model, control, sae_edit(sae_map, latent)):
                    ok, comps = graded_generations(model, tokenizer, bench_rows, **gen)
        finally:
            control.clear()
        correct[v.name] = ok
        stats[v.name] = completion_stats(comps, words)
    return correct, stats


def accuracy_table(
    variants: list[Variant],
    correct: dict[str, np.ndarray],
    stats: dict[str, dict],
    benchmark: str,
    *,
    n_boot: int,
    ci: float = 0.95,
    seed: int = 0,
) -> pl.DataFrame:
    """One row per variant: accuracy and its change from the variant's
    reference, with paired percentile bootstrap intervals over problems."""
    names = [v.name for v in variants]
    correct_VN = np.stack([correct[n].astype(float) for n in names])
    n = correct_VN.shape[1]
    if n == 0:
        raise ValueError(f"{benchmark}: no graded problems")
    rng = np.random.default_rng(seed)
    boot_VB = correct_VN[:, rng.integers(0, n, size=(n_boot, n))].mean(-1)
    q = [50 * (1 - ci), 50 * (1 + ci)]
    rows = []
    for i, v in enumerate(variants):
        ref = names.index(v.reference)
        lo, hi = np.percentile(boot_VB[i], q)
        d_lo, d_hi = np.percentile(boot_VB[i] - boot_VB[ref], q)
        rows.append(
            {
                "benchmark": benchmark,
                "kind": v.kind,
                "id": v.id,
                "label": v.label,
                "feature": v.extra.get("feature"),
                "latent": v.extra.get("latent"),
                "component": v.extra.get("component"),
                "kl_mean": v.extra.get("kl_mean"),
                "reference": v.reference,
                "n": n,
                "accuracy": float(correct_VN[i].mean()),
                "accuracy_lo": float(lo),
                "accuracy_hi": float(hi),
                "delta": float(correct_VN[i].mean() - correct_VN[ref].mean()),
                "delta_lo": float(d_lo),
                "delta_hi": float(d_hi),
                **stats[v.name],
            }
        )
    schema_over = {"feature": pl.Int64, "latent": pl.Int64, "component": pl.Int64}
    return pl.DataFrame(rows, schema_overrides=schema_over, infer_schema_length=None)
