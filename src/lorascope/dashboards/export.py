"""Export of the SAE and its features for other tools (rule `sae_export`).

- `export/sae/`: the SAE in SAELens's on-disk format (a copy of `sae/model`)
  whose `cfg.json` metadata says what it reads, so `sae_lens.SAE.load_from_disk`
  gives an SAE that carries its own provenance: `model_name` (the base
  model), `model_revision`, `adapter` and `adapter_revision` (where the
  rank-1 LoRA came from: a hub id and commit, or the adapter this run
  trained), `hook_name` `lora_scalars` with `scalar_definition`, and
  `scalar_layout`: the input dimensions in order, one entry per
  `components.parquet` row (`index, layer, module, rank_slot, name`).
- `export/features.json`: one entry per SAE feature in the shape
  Neuronpedia's feature uploads use (`modelId`, `layer` = the SAE's id,
  `index` = latent; `explanations` with `description` and
  `explanationModelName`; `activations` with `tokens`, `values`,
  `maxValue`, `maxValueTokenIndex`), plus our `label`, `frac_active`,
  `max_act` and `scores` (every float column of the scores table).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["SCALAR_DEFINITION", "adapter_provenance", "export_sae", "features_json"]

SCALAR_DEFINITION = (
    "per token, for each adapted matrix: (input to the matrix) . lora_A, "
    "before the LoRA scaling and before lora_B (lorascope activations stage)"
)


def adapter_provenance(adapter_dir: Path, model_cfg: dict) -> dict[str, Any]:
    """Where the base model and the adapter came from (ids and revisions)."""
    adapter_dir = Path(adapter_dir)
    source = adapter_dir / "SOURCE.json"
    out = {
        "model_name": model_cfg["base"],
        "model_revision": model_cfg.get("revision"),
    }
    if source.is_file():  # imported: SOURCE.json is the hub snapshot's record
        rec = json.loads(source.read_text())
        out["adapter"] = rec.get("repo_id") or rec.get("path") or model_cfg["adapter"]
        out["adapter_revision"] = rec.get("commit") or rec.get("revision")
    else:
        out["adapter"] = "trained by this run (rule train_rank1)"
        out["adapter_revision"] = None
    return out


def export_sae(
    sae_dir: Path, out_dir: Path, provenance: dict, components: pl.DataFrame
) -> dict:
    """Copy the SAE to `out_dir` with provenance in its cfg.json metadata."""
    sae_dir, out_dir = Path(sae_dir), Path(out_dir)
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    if cfg["d_in"] != components.height:
        raise ValueError(
            f"{sae_dir}/cfg.json: d_in {cfg['d_in']} is not the "
            f"{components.height} rows of components.parquet"
        )
    cols = ["index", "layer", "module", "rank_slot", "name"]
    layout = components.sort("index").select(cols).to_dicts()
    cfg["metadata"] = (
        cfg.get("metadata", {})
        | provenance
        | {
            "hook_name": "lora_scalars",
            "scalar_definition": SCALAR_DEFINITION,
            "scalar_layout": layout,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in sae_dir.iterdir():
        if f.is_file() and f.name != "cfg.json":
            shutil.copy2(f, out_dir / f.name)
    (out_dir / "cfg.json").write_text(json.dumps(cfg, indent=1))
    return cfg["metadata"]


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def features_json(
    features: pl.DataFrame,
    contexts: pl.DataFrame,
    explanations: pl.DataFrame,
    scores: pl.DataFrame,
    model_id: str,
    sae_id: str = "lorascope-lora-scalars-sae",
) -> dict:
    """The features.json content (see the module docstring)."""
    expl = {r["feature"]: r for r in explanations.iter_rows(named=True)}
    floats = [c for c, t in scores.schema.items() if t == pl.Float64]
    score = {
        r["feature"]: {c: _clean(r[c]) for c in floats}
        for r in scores.iter_rows(named=True)
    }
    ctx: dict[int, list] = {}
    # Top activations only: the random sample's windows (source `sample`)
    # serve the autointerp split, not a feature's activation list.
    top = contexts.filter(pl.col("source") != "sample")
    for r in top.sort("feature", "rank").iter_rows(named=True):
        ctx.setdefault(r["feature"], []).append(
            {
                "tokens": list(r["tokens"]),
                "values": [_clean(float(v)) for v in r["acts"]],
                "maxValue": _clean(float(r["value"])),
                "maxValueTokenIndex": int(r["center"]),
            }
        )
    out = []
    for f in features.sort("feature").iter_rows(named=True):
        e = expl.get(f["feature"])
        ok = e is not None and e["status"] == "ok"
        out.append(
            {
                "modelId": model_id,
                "layer": sae_id,
                "index": int(f["latent"]),
                "feature": int(f["feature"]),
                "label": f["label"],
                "frac_active": _clean(float(f["frac_active"])),
                "max_act": _clean(float(f["max"])),
                "explanations": (
                    [
                        {
                            "description": e["explanation"],
                            "explanationModelName": e["explainer"],
                        }
                    ]
                    if ok
                    else []
                ),  # fmt: skip
                "scores": score.get(f["feature"], {}),
                "activations": ctx.get(f["feature"], []),
            }
        )
    return {"modelId": model_id, "layer": sae_id, "features": out}
