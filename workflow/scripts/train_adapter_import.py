"""Rule adapter_import: an existing rank-1 adapter in place of training one.

Reads model.adapter (a local dir, or the snapshot rule hub_fetch made of a hub
id), checks it against train.lora and model.base, and copies it to
train/rank1/adapter/ with SOURCE.json saying where it came from.
"""

from lorascope.core.runtime import script_logging
from lorascope.train.existing import (
    base_layers,
    check_existing_adapter,
    import_adapter,
    snapshot_origin,
)

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    model = smk.params.model
    cfg = check_existing_adapter(
        smk.input.source,
        smk.params.lora,
        smk.params.base,
        base_repo=smk.params.base_repo,
        check_base=model["adapter_check_base"],
        n_layers=base_layers(smk.params.base, model["revision"]),
    )
    files = import_adapter(smk.input.source, smk.output.adapter,
                           snapshot_origin(smk.input.source))  # fmt: skip
    log.info("imported %s (base %s): %s", model["adapter"],
             cfg.get("base_model_name_or_path"), files)  # fmt: skip
