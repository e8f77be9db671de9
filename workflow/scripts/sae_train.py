"""Rule train_sae: the sae.architecture SAE on the activation shards; model +
metrics.json."""

from pathlib import Path

from lorascope.core.config import write_provenance
from lorascope.core.io import write_json
from lorascope.core.runtime import script_logging, seed_everything
from lorascope.core.shards import open_shards
from lorascope.sae.config import SaeConfig
from lorascope.sae.training import train_on_shards

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    cfg = SaeConfig.from_config(smk.params.config)
    seed_everything(cfg.seed)
    shards = open_shards(Path(smk.input.manifest).parent)
    log.info(
        "%s SAE %d -> %d latents, k=%s, on %d tokens x %s epochs (batch %d)",
        cfg.architecture, shards.n_components, cfg.d_sae(shards.n_components), cfg.k,
        shards.n_tokens, cfg.epochs, cfg.batch_size,
    )  # fmt: skip
    metrics = train_on_shards(shards, cfg, smk.output.model)
    log.info(
        "FVU %.4f, mean L0 %.2f, alive %d / %d (dead fraction %.3f)",
        metrics["fvu"], metrics["mean_l0"], metrics["alive_count"],
        metrics["d_sae"], metrics["dead_fraction"],
    )  # fmt: skip
    write_provenance(smk.params.provenance, smk.config)
    write_json(metrics, smk.output.metrics)
