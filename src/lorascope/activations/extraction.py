"""The extraction pass over the SFT set: shards + per-shard top-k summaries.

Used by rule `extract_activations` (workflow/rules/activations.smk), and by the
feature rules through `shard_summary`. The hooks live in `lorascope.activations.hooks`;
this module drives them shard by shard: for each planned shard (whole
documents, fixed rows) that is not already valid it runs every batch, keeps
the LoRA scalars on the host in one preallocated `[T, C]` buffer, streams
the LoRA and MLP features into per-shard top-k/statistics on the device, and
writes the shard atomically. A rerun keeps valid shards (resume after a kill).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from lorascope.activations.hooks import (
    ExtractError,
    LoraCapture,
    MlpCapture,
    forward_batch,
    make_batches,
    mlp_lora_on,
    pad_batch,
)
from lorascope.activations.shard_writer import (
    clear_shard,
    shard_plan,
    valid_record,
    write_manifest,
    write_shard,
)
from lorascope.core.io import sha256_file
from lorascope.core.runtime import torch_dtype
from lorascope.core.sample import StreamingSample
from lorascope.core.topk import (
    FeatureStats,
    StreamingTopK,
    feature_units,
    signed_features,
    stream_polarity,
)

log = logging.getLogger(__name__)

__all__ = [
    "ExtractSettings",
    "extract_to_shards",
    "shard_summary",
    "fingerprint",
]


@dataclass
class ExtractSettings:
    """The `activations:` config keys the extraction pass uses, from the
    schema-filled section (defaults, choices and bounds live in the schema)."""

    batch_tokens: int
    shard_tokens: int
    dtype: str
    mlp_neurons_per_layer: int
    mlp_tensor: str
    mlp_lora: bool | None
    """null = off for act_gate_up, on for up_proj (hooks.mlp_lora_on)."""
    polarity: str
    mlp_polarity: str | None
    """null = `polarity`."""
    top_k: int
    sample_k: int
    """0 = no random sample (core.sample): the split bins the top-k alone."""

    @classmethod
    def from_config(cls, act_cfg: dict) -> ExtractSettings:
        """The fields of an `activations` section (its other keys ignored)."""
        return cls(**{f.name: act_cfg[f.name] for f in fields(cls)})

    def kind_polarity(self, kind: str) -> str:
        """The configured polarity of `kind` ("lora"/"mlp"), dominant included."""
        if kind == "mlp" and self.mlp_polarity is not None:
            return self.mlp_polarity
        return self.polarity


def _observe(top, stats, sample, values_TU, doc_T, pos_T, polarity: str) -> None:
    # Chunked so the signed view ([T, 2U] under `both`) stays ~64 MB.
    chunk = max(1, (1 << 24) // max(1, 2 * values_TU.shape[1]))
    for s in range(0, values_TU.shape[0], chunk):
        feats_TF = signed_features(values_TU[s : s + chunk], polarity)
        top.update(feats_TF, doc_T[s : s + chunk], pos_T[s : s + chunk])
        stats.update(feats_TF)
        if sample is not None:
            sample.update(feats_TF, doc_T[s : s + chunk], pos_T[s : s + chunk])


def extract_shard(
    model,
    lora: LoraCapture,
    mlp: MlpCapture | None,
    seqs,
    docs,
    cfg,
    device,
    on_tokens: Callable[[int], None],
) -> tuple[dict, dict]:
    """Columns of one shard (host) and its per-kind top-k/stats summary."""
    lengths = [len(s) for s in seqs]
    offsets = torch.tensor([0, *lengths]).cumsum(0)
    store = torch_dtype(cfg.dtype)
    pin = torch.device(device).type == "cuda"
    acts_TC = torch.empty(
        int(offsets[-1]), lora.n_components, dtype=store, pin_memory=pin
    )
    cols = {
        "doc": torch.repeat_interleave(torch.as_tensor(docs), torch.tensor(lengths)),
        "pos": torch.cat([torch.arange(n) for n in lengths]),
        "token_id": torch.cat([torch.as_tensor(s) for s in seqs]),
    }
    kinds = {"lora": lora.n_components, "mlp": mlp.n_units if mlp else 0}
    summary = {}
    for kind, n_units in kinds.items():
        n_feat = len(
            feature_units(n_units, stream_polarity(cfg.kind_polarity(kind)))[0]
        )
        summary[kind] = (
            StreamingTopK(n_feat, cfg.top_k, device),
            FeatureStats(n_feat, device),
            StreamingSample(n_feat, cfg.sample_k, device) if cfg.sample_k else None,
        )
    for batch in make_batches(lengths, cfg.batch_tokens):
        ids, mask = pad_batch([seqs[j] for j in batch], device)
        lora_TC, mlp_TU = forward_batch(model, ids, mask, lora, mlp)
        dest_T = torch.cat([torch.arange(offsets[j], offsets[j + 1]) for j in batch])
        lora_TC = lora_TC.to(store)  # features see exactly what is stored
        acts_TC[dest_T] = lora_TC.cpu()
        doc_T, pos_T = cols["doc"][dest_T].to(device), cols["pos"][dest_T].to(device)
        lora_pol = stream_polarity(cfg.kind_polarity("lora"))
        _observe(*summary["lora"], lora_TC.float(), doc_T, pos_T, lora_pol)
        if mlp is not None:
            mlp_pol = stream_polarity(cfg.kind_polarity("mlp"))
            _observe(*summary["mlp"], mlp_TU, doc_T, pos_T, mlp_pol)
        on_tokens(len(dest_T))
    extras = {}
    for kind, (top, stats, sample) in summary.items():
        extras.update(top.state_dict(f"{kind}.top."))
        extras.update(stats.state_dict(f"{kind}.stats."))
        if sample is not None:
            extras.update(sample.state_dict(f"{kind}.sample."))
    return {"acts_TC": acts_TC, **cols}, extras


def extract_to_shards(
    model,
    seqs_by_row,
    docs_by_row,
    out_dir,
    cfg: ExtractSettings,
    fingerprint: str,
    device,
    on_tokens: Callable[[int], None] = lambda n: None,
) -> dict:
    """Write every missing/invalid shard of the plan, then the manifest.

    Shards already valid for this `fingerprint` are kept (resume after a kill);
    shard i always holds the same rows, so no token is ever stored twice.
    """
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    plan = shard_plan([len(s) for s in seqs_by_row], cfg.shard_tokens)
    model.eval()
    lora = LoraCapture(model)
    mlp = (
        MlpCapture(model, cfg.mlp_neurons_per_layer, cfg.mlp_tensor, cfg.mlp_lora)
        if (cfg.mlp_neurons_per_layer)
        else None
    )
    records = []
    try:
        for i, rows in enumerate(plan):
            rec = valid_record(shard_dir, i, fingerprint, rows)
            if rec is not None:
                log.info("shard %d (rows %s) already valid: kept", i, rows)
                on_tokens(rec["shape"][0])
                records.append(rec)
                continue
            clear_shard(shard_dir, i)
            cols, extras = extract_shard(
                model,
                lora,
                mlp,
                seqs_by_row[rows[0] : rows[1]],
                docs_by_row[rows[0] : rows[1]],
                cfg,
                device,
                on_tokens,
            )
            records.append(
                write_shard(
                    shard_dir,
                    i,
                    cols["acts_TC"],
                    cols["doc"],
                    cols["pos"],
                    cols["token_id"],
                    rows=rows,
                    fingerprint=fingerprint,
                    extras={"summary": extras},
                )
            )
    finally:
        lora.remove()
        if mlp is not None:
            mlp.remove()
    for stale in shard_dir.glob("shard-*.json"):  # from a longer earlier plan
        index = int(stale.name.split(".")[0].removeprefix("shard-"))
        if index >= len(plan):
            clear_shard(shard_dir, index)
    meta = {
        "fingerprint": fingerprint,
        "n_docs": len(seqs_by_row),
        "polarity": cfg.kind_polarity("lora"),
        "mlp_polarity": cfg.kind_polarity("mlp"),
        "top_k": cfg.top_k,
        "sample_k": cfg.sample_k,
        "dtype": cfg.dtype,
        "mlp_tensor": cfg.mlp_tensor,
        "mlp_lora": mlp_lora_on(cfg.mlp_tensor, cfg.mlp_lora),
        "mlp_neurons_per_layer": cfg.mlp_neurons_per_layer,
        "mlp_layers": mlp.n_layers if mlp else 0,
    }
    return write_manifest(out_dir, records, lora.columns, meta)


def shard_summary(shard_set, kind: str, device="cpu") -> tuple:
    """(top-k, stats, random sample) of `kind` ("lora"/"mlp"), each merged
    over every shard, whose summary is read once. The sample is None if it
    was not streamed (`activations.sample_k: 0`, per the manifest)."""
    want_sample = bool(shard_set.meta.get("sample_k"))
    merged = None
    for rec in shard_set.shards:
        state = shard_set.read_extra(rec, "summary")
        if want_sample and f"{kind}.sample.priority" not in state:
            raise ExtractError(
                f"{shard_set.root}: {rec['file']} has no {kind} "
                "random sample although the manifest says sample_k="
                f"{shard_set.meta['sample_k']}; rerun extract_activations"
            )
        parts = (
            StreamingTopK.from_state_dict(state, f"{kind}.top.", device),
            FeatureStats.from_state_dict(state, f"{kind}.stats.", device),
            StreamingSample.from_state_dict(state, f"{kind}.sample.", device)
            if want_sample
            else None,
        )
        if merged is None:
            merged = parts
        else:
            for mine, theirs in zip(merged, parts, strict=True):
                if mine is not None:
                    mine.merge(theirs)
    if merged is None:
        raise ExtractError(f"{shard_set.root}: no shards, so no {kind} features")
    return merged


def fingerprint(
    settings: dict, adapter_dir, sft_path, base: str, model_cfg: dict
) -> str:
    """Identity of an extraction setup: shards from another one are never reused.

    Covers the settings, the adapter weights, the SFT table and the base model's
    name and loading options (hashing 64 GB of base weights is not worth it).
    """
    adapter = Path(adapter_dir) / "adapter_model.safetensors"
    blob = {
        "settings": settings,
        "adapter": sha256_file(adapter),
        "sft": sha256_file(sft_path),
        "base": base,
        "model": model_cfg,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()
