"""Rule full_checkpoint: record a named full fine-tune instead of training one.

At paper scale the full fine-tune baseline is an existing checkpoint
(simplescaling/s1.1-32B); later stages read POINTER.json to load it.
"""

from pathlib import Path

from lorascope.core.io import atomic_path, write_json
from lorascope.core.runtime import script_logging

smk = snakemake  # noqa: F821 (injected by Snakemake)

with script_logging(smk) as log:
    model = smk.params.model
    with atomic_path(smk.output.model, is_dir=True) as tmp:
        # With hub.prefetch the checkpoint is read from its local snapshot.
        snapshot = smk.input.snapshot[0] if smk.input.snapshot else None
        pointer = {
            "model": snapshot or model["full_finetune"],
            "revision": None if snapshot else model["full_finetune_revision"],
            # A local checkpoint's content: a retrained one gives another
            # pointer, so what reads it sees a changed file.
            "content": smk.params.user_files,
        }
        write_json(pointer, Path(tmp) / "POINTER.json")
    log.info("full fine-tune baseline: %s", pointer)
