"""Rule sae_architectures: SAE architectures x two seeds on the toy world,
held-out metrics, seed stability and ground-truth recovery in one table."""

import dataclasses
from pathlib import Path

import polars as pl

from lorascope.core.io import atomic_path, to_markdown, write_parquet
from lorascope.core.runtime import script_logging
from lorascope.core.shards import open_shards
from lorascope.groundtruth.sae_compare import compare_architectures
from lorascope.sae.config import SaeConfig

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    config = smk.params.config
    gt = config["groundtruth"]
    cfg = SaeConfig.from_config(config)
    if gt["sae_epochs"] is not None:
        cfg = dataclasses.replace(cfg, epochs=gt["sae_epochs"])
    shards = open_shards(Path(smk.input.manifest).parent)
    table = compare_architectures(
        cfg, list(gt["sae_architectures"]), shards, pl.read_parquet(smk.input.tokens)
    )
    write_parquet(table, smk.output.table)
    with atomic_path(smk.output.md) as tmp:
        tmp.write_text(
            "# SAE architectures on the embedded world (two seeds each)\n\n"
            f"k={cfg.k}, expansion {cfg.expansion}, {cfg.epochs} epochs; held out: "
            f"documents with doc % {cfg.heldout_every} == 0. gt_*: matched "
            "recovery of the token roles by the alive latents (SFT documents of "
            "groundtruth/tokens.parquet).\n\n" + to_markdown(table)
        )
    log.info("%d SAEs compared", table.height)
