"""Rule `model_diff` from files to tables: which texts, which subspaces, the two
passes (`lorascope.diffing.passes`) and the tables (`.tables`).

Texts: `diffing.n_sequences` training sequences drawn as the KL ablation
draws (`lorascope.ablation.setup.select_sequences`: seeded, cut to
`diffing.max_tokens`, positions by `diffing.token_scope`), then per
benchmark the first `diffing.bench_limit` prompts with the full fine-tune's
own generation (`eval/generations/{engine}/full/{benchmark}.parquet`: the
prompt string and the completion, tokenised together without special
tokens), every position with a next token counted.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lorascope.ablation.scalar_control import check_table
from lorascope.ablation.setup import select_sequences
from lorascope.causal.direct_effects import read_head, writes
from lorascope.causal.feature_kl import SaeMap
from lorascope.core.contexts import token_strings
from lorascope.core.models import load_tokenizer, resolve_model_dir
from lorascope.core.runtime import seed_everything, torch_dtype
from lorascope.core.saes import load_sae
from lorascope.diffing.checks import model_files, require_compatible
from lorascope.diffing.passes import Text, measure
from lorascope.diffing.principal import (
    component_directions,
    feature_cosines,
    principal_directions,
    sae_strongest_writes,
)
from lorascope.diffing.states import Head
from lorascope.diffing.subspaces import cumulative_bases, orthonormal, sae_writes
from lorascope.diffing.tables import (
    layer_table,
    resample,
    table3,
    token_table,
    top_contexts,
)

__all__ = [
    "DiffPlan",
    "bench_texts",
    "release",
    "sae_bases",
    "table3_markdown",
    "train_texts",
]


def train_texts(config: dict, sft_path: str) -> list[Text]:
    cfg = config["diffing"]
    sft = pl.read_parquet(sft_path, columns=["input_ids", "labels"])
    if len(sft) < cfg["n_sequences"]:  # select_sequences would name ablation's key
        raise ValueError(
            f"diffing.n_sequences: {cfg['n_sequences']} requested but the SFT set "
            f"({sft_path}) has {len(sft)} rows"
        )
    pairs = select_sequences(
        sft, cfg["n_sequences"], cfg["max_tokens"], config["seed"],
        cfg["token_scope"],
    )  # fmt: skip
    return [Text("train", i, ids, scope) for i, (ids, scope) in enumerate(pairs)]


def bench_texts(config: dict, bench: dict[str, str], tokenizer) -> list[Text]:
    cfg, out = config["diffing"], []
    for name, path in bench.items():
        rows = pl.read_parquet(path, columns=["prompt", "completion"])
        for i, row in enumerate(rows.head(cfg["bench_limit"]).iter_rows(named=True)):
            text = row["prompt"] + (row["completion"] or "")
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids_T = torch.tensor(ids[: cfg["max_tokens"]])
            scope_T = torch.ones(len(ids_T), dtype=torch.bool)
            scope_T[-1:] = False  # the last position has no next token here
            out.append(Text(name, i, ids_T, scope_T))
    return out


def sae_bases(
    sae_dir: str, features_path: str, write_CD, layer_C, n_layers: int, top_n: int
) -> list[torch.Tensor]:
    """Per layer, the span of the top_n SAE features' (largest mean code)
    writes accumulated up to it (lorascope.diffing.subspaces.sae_writes)."""
    d_model = write_CD.shape[1]
    if top_n == 0:
        return [torch.zeros(0, d_model, dtype=torch.float64)] * n_layers
    features = pl.read_parquet(features_path).sort("mean", descending=True)
    latents = features.head(top_n)["latent"].to_list()
    dir_GC = SaeMap(load_sae(sae_dir)).dir_FC[torch.tensor(latents)]
    return [orthonormal(w) for w in sae_writes(dir_GC, write_CD, layer_C, n_layers)]


def release(model) -> None:
    """Drop a model before the next is loaded (never two on one card)."""
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class DiffPlan:
    """What rule `model_diff` measures, checked before any model is loaded:
    where the full fine-tune is, the texts, how models load. The script
    loads the full model for pass 1, then the base + adapter for `tables`."""

    config: dict
    base: str
    inputs: dict
    full_path: str
    full_revision: str | None
    texts: list[Text]
    tokenizer: object

    @classmethod
    def prepare(cls, config: dict, base: str, inputs: dict, log) -> DiffPlan:
        """`inputs`: adapter, components, full, sft, sae, sae_features and
        bench ({benchmark: the full model's generations table}). Fails if
        the two models cannot be compared (lorascope.diffing.checks)."""
        revision = config["model"]["revision"]
        full_path, full_revision = resolve_model_dir(inputs["full"])
        require_compatible(
            model_files(base, revision),
            model_files(full_path, full_revision),
            base,
            full_path,
        )
        seed_everything(config["seed"])
        tokenizer = load_tokenizer(base, revision)
        texts = train_texts(config, inputs["sft"])
        texts += bench_texts(config, inputs["bench"], tokenizer)
        n_tokens = sum(len(t.ids_T) for t in texts)
        log.info("%d sequences, %d tokens", len(texts), n_tokens)
        return cls(config, base, inputs, full_path, full_revision, texts, tokenizer)

    def state_key(self) -> str:
        """What pass 1's stored states depend on besides the texts (whose
        ids are stored with them): the full fine-tune (its location,
        revision, and for a local dir its files' sizes and mtimes: a
        retrained model invalidates them), the dtype and the kernel."""
        folder = Path(self.full_path)
        files = []
        if folder.is_dir():
            files = sorted(
                (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in folder.rglob("*")
                if p.is_file() and not p.name.startswith(".")
            )
        m = self.config["model"]
        return json.dumps(
            {"full": self.full_path, "revision": self.full_revision, "files": files,
             "dtype": m["dtype"], "attn": m["attn_implementation"]},
            sort_keys=True,
        )  # fmt: skip

    @property
    def load_kwargs(self) -> dict:
        """load_causal_lm's settings for either model (no revision)."""
        model_cfg = self.config["model"]
        device = self.config["diffing"]["device"] or self.config["device"]
        return dict(dtype=model_cfg["dtype"], device=device,
                    attn_implementation=model_cfg["attn_implementation"])  # fmt: skip

    def feature_pcs(self, model, measured, write_CD, layer_C, n_layers, n_pcs):
        """Cosines of every LoRA direction and SAE feature with Δh_full's top
        principal directions at its layer (lorascope.diffing.principal)."""
        if n_pcs == 0:
            return feature_cosines([], [])
        d_model = write_CD.shape[1]
        pcs = [
            principal_directions(
                np.concatenate(rows) if rows else np.zeros((0, d_model)), n_pcs
            )
            for rows in measured.samples
        ]
        sae = None
        if self.inputs.get("sae"):
            latents = pl.read_parquet(self.inputs["sae_features"])["latent"].to_list()
            dir_GC = SaeMap(load_sae(self.inputs["sae"])).dir_FC[torch.tensor(latents)]
            sae = (latents, *sae_strongest_writes(dir_GC, write_CD, layer_C, n_layers))
        return feature_cosines(pcs, component_directions(model), sae)

    def tables(self, model, scratch: Path) -> dict[str, pl.DataFrame]:
        """Pass 2 with the base + adapter `model`, then the tables residual,
        kl_layers, table3, contexts, feature_pcs, tokens."""
        cfg, inputs = self.config["diffing"], self.inputs
        table = pl.read_parquet(inputs["components"])
        check_table(table, model)
        dtype = torch_dtype(self.config["model"]["dtype"])
        norm_D, unembed_XD = read_head(model, self.full_path, self.full_revision, dtype)
        full_head = Head.with_weights(Head.of(model), norm_D, unembed_XD)
        n_layers = model.get_base_model().config.num_hidden_layers
        write_CD, _ = writes(model)
        layer_C = table["layer"].to_numpy()
        w_bases = cumulative_bases(write_CD, layer_C, n_layers)
        s_bases = sae_bases(inputs["sae"], inputs["sae_features"], write_CD,
                            layer_C, n_layers, cfg["sae_top_n"])  # fmt: skip
        n_pcs = cfg["principal_directions"]
        measured = measure(model, full_head, self.texts, scratch, w_bases, s_bases,
                           cfg["logit_chunk"], cfg["pca_tokens"] if n_pcs else 0,
                           self.config["seed"])  # fmt: skip
        pcs = self.feature_pcs(model, measured, write_CD, layer_C, n_layers, n_pcs)
        dims = {"write": [len(b) for b in w_bases], "sae": [len(b) for b in s_bases]}
        d_model = write_CD.shape[1]
        boot = resample(self.texts, measured, cfg["bootstrap_samples"],
                        self.config["seed"])  # fmt: skip
        layers = layer_table(boot, dims, d_model)
        kl_cols = [c for c in layers.columns if "kl_" in c]
        decode = token_strings(self.tokenizer)
        return {
            "residual": layers.drop(kl_cols),
            "kl_layers": layers.select("source", "layer", "n_sequences", "n_tokens",
                                       *kl_cols),  # fmt: skip
            "table3": table3(boot, dims, d_model),
            "feature_pcs": pcs,
            "contexts": top_contexts(self.texts, measured, decode,
                                     cfg["top_contexts"], cfg["context_width"]),
            "tokens": token_table(self.texts, measured),
        }  # fmt: skip


def table3_markdown(table: pl.DataFrame) -> str:
    """Table 3 for humans: one row per metric, value [low, high] per source."""
    lines = ["# Table 3: what the rank-1 adapter captures of full fine-tuning", ""]
    for source in table["source"].unique(maintain_order=True):
        part = table.filter(pl.col("source") == source)
        n_seq, n_tok = part["n_sequences"][0], part["n_tokens"][0]
        lines += [f"## {source} ({n_seq} sequences, {n_tok} tokens)", ""]
        lines += ["| metric | value | 95% CI | what |", "|---|---|---|---|"]
        for row in part.iter_rows(named=True):
            ci = (
                "" if np.isnan(row["ci_low"])
                else f"[{row['ci_low']:.4g}, {row['ci_high']:.4g}]"
            )  # fmt: skip
            lines.append(
                f"| {row['metric']} | {row['value']:.4g} | {ci} | {row['what']} |"
            )
        lines.append("")
    return "\n".join(lines)
