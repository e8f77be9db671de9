"""Rule components: check the trained adapter and write components.parquet."""

from lorascope.core.components import check_adapter, component_table
from lorascope.core.io import write_parquet
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    lora = smk.params.lora
    targets = tuple(m.removesuffix("_proj") for m in lora["target_modules"])
    check_adapter(smk.input.adapter, rank=lora["r"], modules=targets)
    table = component_table(smk.input.adapter)
    log.info("%d components over %d layers", table.height, table["layer"].n_unique())
    write_parquet(table, smk.output.table)
