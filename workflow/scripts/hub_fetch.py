"""Rule hub_fetch: one hub repo (model, adapter or dataset) to a local snapshot.

The only job that needs the network (and, for gated repos, HF_TOKEN).
"""

from lorascope.core.runtime import script_logging
from lorascope.hub.fetch import fetch_snapshot, online_again
from lorascope.hub.names import parse_snapshot_name

smk = snakemake  # noqa: F821 (injected by Snakemake)
online_again()  # hub.prefetch switched the hub off for every job but this one

with script_logging(smk) as log:
    repo_id, revision = parse_snapshot_name(smk.wildcards.snapshot)
    record = fetch_snapshot(
        repo_id,
        smk.wildcards.kind,
        smk.output.snapshot,
        revision=revision,
        endpoint=smk.params.endpoint,
        gated=repo_id in smk.params.gated,
    )
    log.info("%s@%s: %d files, commit %s", repo_id, revision,
             len(record["files"]), record["commit"])  # fmt: skip
