"""The component table: the one ordering every stage shares.

A rank-r LoRA on module M of layer L contributes r scalars per token
(`input @ lora_A.T`, before scaling and before lora_B). The table lists them
in a fixed order (layer, then q k v o gate up down, then rank slot); activation
columns, SAE inputs, ablation masks, plots and dashboards all use it. Built by
rule `components`; `select` is used by adapter surgery, KL ablation and
steering.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl
from safetensors import safe_open

MODULE_ORDER = ("q", "k", "v", "o", "gate", "up", "down")
GROUPS = {"q": "attn", "k": "attn", "v": "attn", "o": "attn"}
GROUPS.update({"gate": "mlp", "up": "mlp", "down": "mlp"})
_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(ValueError):
    """An adapter directory is missing, corrupt or not what the run requires."""


class LoraModule(NamedTuple):
    layer: int
    module: str  # short name: q k v o gate up down
    group: str  # attn | mlp
    name: str  # module path inside the base model, e.g. model.layers.0.mlp.up_proj
    rank: int
    d_in: int
    d_out: int


def short_name(module_path: str) -> str:
    return module_path.rsplit(".", 1)[-1].removesuffix("_proj")


def target_modules_problem(
    module_names: set[str], target_modules: list[str], model: str
) -> str | None:
    """The train.lora.target_modules the model has no module for, as a
    message naming the key; None if it has them all. PEFT adapts the modules
    a name matches and skips a name nothing matches without a word, so a
    typo or a packed model (qkv_proj) would train a different adapter."""
    missing = [t for t in target_modules if t not in module_names]
    if not missing:
        return None
    return (
        f"train.lora.target_modules: the base model {model!r} has no module "
        f"named {', '.join(map(repr, missing))} (its projections: "
        f"{', '.join(sorted(n for n in module_names if n.endswith('_proj')))})"
    )


def groups_problem(target_modules: list[str]) -> str | None:
    """The attention or MLP group train.lora.target_modules leaves empty, as a
    message naming the key; None if both have a module. The KL ablation's
    groups and Table 2's attention-/MLP-ablated variants ablate each group,
    so an adapter without one fails after training has finished."""
    groups = {GROUPS.get(t.removesuffix("_proj")) for t in target_modules}
    missing = [g for g in ("attn", "mlp") if g not in groups]
    if not missing:
        return None
    names = {"attn": "q/k/v/o_proj", "mlp": "gate/up/down_proj"}
    return (
        f"train.lora.target_modules: {list(target_modules)} adapts no "
        + " and no ".join(f"{g} module ({names[g]})" for g in missing)
        + "; the KL ablation's groups and Table 2's attention-/MLP-ablated "
        "adapters need components of both"
    )


def _parse(name: str, rank: int, d_in: int, d_out: int) -> LoraModule:
    m = _LAYER_RE.search(name)
    if not m:
        raise AdapterError(f"LoRA module {name!r} is not inside a numbered layer")
    mod = short_name(name)
    if mod not in GROUPS:
        raise AdapterError(
            f"LoRA module {name!r}: unknown projection {mod!r}; lorascope knows "
            f"{', '.join(MODULE_ORDER)} (packed names like qkv_proj are not "
            "supported)"
        )
    return LoraModule(int(m.group(1)), mod, GROUPS[mod], name, rank, d_in, d_out)


def _sorted(mods: list[LoraModule]) -> list[LoraModule]:
    return sorted(mods, key=lambda m: (m.layer, MODULE_ORDER.index(m.module)))


def lora_modules(peft_model, adapter_name: str = "default") -> list[tuple]:
    """(LoraModule, torch module) pairs of a loaded PeftModel, in table order."""
    from peft.tuners.lora import LoraLayer

    found = []
    for path, mod in peft_model.named_modules():
        if isinstance(mod, LoraLayer) and adapter_name in mod.lora_A:
            a = mod.lora_A[adapter_name].weight  # (r, d_in)
            b = mod.lora_B[adapter_name].weight  # (d_out, r)
            name = path.removeprefix("base_model.model.")
            found.append((_parse(name, a.shape[0], a.shape[1], b.shape[0]), mod))
    if not found:
        raise AdapterError("model has no LoRA layers for adapter " + adapter_name)
    order = {m.name: i for i, m in enumerate(_sorted([m for m, _ in found]))}
    return sorted(found, key=lambda pair: order[pair[0].name])


def adapter_modules(adapter_dir: Path | str) -> list[LoraModule]:
    """Read the LoRA modules of a PEFT adapter directory without a model."""
    adapter_dir = Path(adapter_dir)
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.exists() or not (adapter_dir / ADAPTER_CONFIG).exists():
        raise AdapterError(
            f"{adapter_dir}: not a PEFT adapter dir (needs {ADAPTER_CONFIG} and "
            f"{ADAPTER_WEIGHTS})"
        )
    shapes: dict[str, dict[str, tuple]] = {}
    try:
        with safe_open(weights, framework="pt") as f:
            for key in f.keys():
                m = re.match(r"(?:base_model\.model\.)?(.*)\.lora_([AB])\.weight$", key)
                if m:
                    shape = tuple(f.get_slice(key).get_shape())
                    shapes.setdefault(m.group(1), {})[m.group(2)] = shape
    except Exception as e:  # safetensors raises several types on corrupt files
        raise AdapterError(f"{weights}: unreadable safetensors file ({e})") from e
    mods = []
    for name, ab in shapes.items():
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{weights}: {name} lacks lora_A or lora_B")
        (r, d_in), (d_out, _) = ab["A"], ab["B"]
        mods.append(_parse(name, r, d_in, d_out))
    if not mods:
        raise AdapterError(f"{weights}: no LoRA weights found")
    return _sorted(mods)


def table_from_modules(mods: list[LoraModule]) -> pl.DataFrame:
    rows = [
        dict(
            layer=m.layer,
            module=m.module,
            group=m.group,
            rank_slot=slot,
            d_in=m.d_in,
            d_out=m.d_out,
            name=m.name,
        )
        for m in mods
        for slot in range(m.rank)
    ]
    return (
        pl.DataFrame(rows)
        .with_row_index("index")
        .with_columns(pl.col("index").cast(pl.Int64))
    )


def component_label(layer: int, module: str, slot: int, rank: int) -> str:
    """`L3.gate` for a rank-1 adapter, `L3.gate#1` (direction 1, the second
    row of lora_A) for a rank > 1 one: the name every output gives a scalar."""
    return f"L{layer}.{module}" + (f"#{slot}" if rank > 1 else "")


def table_rank(table: pl.DataFrame) -> int:
    """The adapter's rank r: directions (rank slots) per adapted module."""
    return int(table["rank_slot"].max()) + 1


def component_labels(table: pl.DataFrame) -> list[str]:
    """`component_label` of every row of a component table, in its order."""
    rank = table_rank(table)
    return [
        component_label(layer, module, slot, rank)
        for layer, module, slot in table.select(
            "layer", "module", "rank_slot"
        ).iter_rows()
    ]


def component_table(adapter_dir: Path | str) -> pl.DataFrame:
    """components.parquet: index, layer, module, group, rank_slot, d_in, d_out, name."""
    return table_from_modules(adapter_modules(adapter_dir))


def check_adapter(
    adapter_dir: Path | str,
    rank: int | None = None,
    modules: tuple[str, ...] | None = MODULE_ORDER,
    n_layers: int | None = None,
) -> list[LoraModule]:
    """Fail clearly if an adapter is not the one the run requires."""
    mods = adapter_modules(adapter_dir)
    if rank is not None:
        bad = sorted({m.rank for m in mods if m.rank != rank})
        if bad:
            raise AdapterError(f"{adapter_dir}: rank {bad} found, rank {rank} required")
    layers = sorted({m.layer for m in mods})
    if n_layers is not None and len(layers) != n_layers:
        raise AdapterError(
            f"{adapter_dir}: LoRA on {len(layers)} layers, expected {n_layers}"
        )
    if modules:
        present = {(m.layer, m.module) for m in mods}
        missing = [
            f"layers.{layer}.{m}_proj"
            for layer in layers
            for m in modules
            if (layer, m) not in present
        ]
        if missing:
            raise AdapterError(
                f"{adapter_dir}: missing target modules {missing[:8]}"
                + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
            )
    return mods


def adapter_tensor_names(adapter_dir: Path | str) -> list[str]:
    """Every tensor name in the adapter's safetensors file."""
    weights = Path(adapter_dir) / ADAPTER_WEIGHTS
    try:
        with safe_open(weights, framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises several types on corrupt files
        raise AdapterError(f"{weights}: unreadable safetensors file ({e})") from e


def _lora_only(adapter_dir: Path, cfg: dict) -> None:
    """An adapter that trains more than the rank-r LoRA factors changes the
    model in ways its components cannot show: refuse it, naming the field."""
    where = adapter_dir / ADAPTER_CONFIG
    extra = cfg.get("modules_to_save")
    if extra:
        raise AdapterError(
            f"{where}: modules_to_save = {extra}: the adapter also trains whole "
            "modules, an update outside its LoRA components that every stage "
            "here would leave out"
        )
    if cfg.get("use_dora"):
        raise AdapterError(
            f"{where}: use_dora = true: a DoRA adapter also rescales every "
            "weight column by a learned magnitude, an update outside its LoRA "
            "components that every stage here would leave out"
        )
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        bias = f"bias = {cfg.get('bias')!r}"
        field = "lora_bias = true" if cfg.get("lora_bias") else bias
        raise AdapterError(
            f"{where}: {field}: the adapter also trains biases, an update "
            "outside its LoRA components that every stage here would leave out"
        )
    odd = [
        k
        for k in adapter_tensor_names(adapter_dir)
        if not re.search(r"\.lora_[AB]\.weight$", k)
    ]
    if odd:
        raise AdapterError(
            f"{adapter_dir / ADAPTER_WEIGHTS}: tensors that are not LoRA A/B "
            f"weights: {odd[:4]}" + (f" (+{len(odd) - 4} more)" if len(odd) > 4 else "")
        )


def read_adapter_config(adapter_dir: Path | str) -> dict:
    with open(Path(adapter_dir) / ADAPTER_CONFIG) as f:
        return json.load(f)


def select(
    table: pl.DataFrame,
    layers=None,
    modules=None,
    groups=None,
    indices=None,
) -> np.ndarray:
    """Boolean mask over the table's rows; None means 'any'. Criteria AND."""
    mask = np.ones(table.height, dtype=bool)
    for col, values in (("layer", layers), ("module", modules), ("group", groups)):
        if values is not None:
            values = [values] if isinstance(values, (int, str)) else list(values)
            unknown = set(values) - set(table[col].to_list())
            if unknown:
                raise ValueError(f"select: no component has {col} in {sorted(unknown)}")
            mask &= table[col].is_in(values).to_numpy()
    if indices is not None:
        idx = np.zeros_like(mask)
        idx[np.asarray(list(indices), dtype=int)] = True
        mask &= idx
    return mask


def _same_base(declared: str | None, base: str, base_repo: str | None) -> bool:
    """Whether the adapter's declared base is the configured one: equal hub ids,
    or the same final path component (a local copy of the same model)."""
    if not declared:
        return False
    names = {base, base_repo} - {None}
    tail = lambda s: s.rstrip("/").split("/")[-1].lower()  # noqa: E731
    return declared in names or tail(declared) in {tail(n) for n in names}


def check_existing_adapter(
    adapter_dir: Path | str,
    lora_cfg: dict,
    base: str,
    base_repo: str | None = None,
    check_base: bool = True,
    n_layers: int | None = None,
) -> dict:
    """Fail clearly unless `adapter_dir` is the adapter this config analyses.

    `base` is the configured base model (hub id or local path); `base_repo`
    the hub id a local snapshot was fetched from, if any; `n_layers` the base
    model's layer count (every layer must carry the target modules; None
    skips that check). Also refused: anything trained besides the LoRA
    factors (modules_to_save, DoRA, biases). Returns the adapter's config.
    """
    adapter_dir = Path(adapter_dir)
    cfg = read_adapter_config(adapter_dir)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{adapter_dir}: peft_type {cfg['peft_type']}, not LORA")
    want_modules = sorted(lora_cfg["target_modules"])
    have = cfg.get("target_modules")
    have = sorted([have] if isinstance(have, str) else have or [])
    if have != want_modules:
        raise AdapterError(
            f"{adapter_dir}: adapts {have}, the config expects {want_modules} "
            "(set train.lora.target_modules to analyse this adapter)"
        )
    if cfg.get("r") != lora_cfg["r"]:
        raise AdapterError(
            f"{adapter_dir}: rank {cfg.get('r')}, the config expects "
            f"train.lora.r = {lora_cfg['r']}"
        )
    _lora_only(adapter_dir, cfg)
    modules = tuple(m.removesuffix("_proj") for m in lora_cfg["target_modules"])
    mods = check_adapter(adapter_dir, rank=lora_cfg["r"], modules=modules)
    if n_layers is not None:
        missing = sorted(set(range(n_layers)) - {m.layer for m in mods})
        if missing:
            picked = cfg.get("layers_to_transform")
            raise AdapterError(
                f"{adapter_dir}: no LoRA on layers {missing[:8]}"
                + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
                + f" of the base model's {n_layers}"
                + (
                    f" ({ADAPTER_CONFIG}: layers_to_transform = {picked})"
                    if picked is not None
                    else ""
                )  # fmt: skip
                + ": every stage here compares all layers"
            )
    declared = cfg.get("base_model_name_or_path")
    if check_base and not _same_base(declared, base, base_repo):
        raise AdapterError(
            f"{adapter_dir}: trained on {declared!r}, but model.base is {base!r} "
            "(point model.base at that model, or set model.adapter_check_base: "
            "false if it is the same model under another name)"
        )
    return cfg
