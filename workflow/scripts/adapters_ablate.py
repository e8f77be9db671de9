"""Rule adapters_ablate: the rank-1 adapter with one component group zeroed."""

from lorascope.adapters.surgery import ablate_adapter, ablation_mask
from lorascope.core.components import component_table
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    table = component_table(smk.input.adapter)
    mask = ablation_mask(table, groups=smk.params.group)
    ablated = ablate_adapter(smk.input.adapter, smk.output.adapter, mask)
    log.info(
        "%s: zeroed lora_B of %d of %d components (group %s)",
        smk.wildcards.variant,
        ablated.height,
        table.height,
        smk.params.group,
    )
