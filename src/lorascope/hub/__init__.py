"""Stage hub (workflow/rules/hub.smk, rule `hub_fetch`).

Consumes: hub ids the config names (base model, full fine-tune checkpoint,
existing adapter, SFT dataset, benchmark datasets) and, for gated repos,
`HF_TOKEN` from the environment of this job only.
Produces: `{hub.dir}/{model,dataset}/{org}--{name}@{revision}/`, a plain
snapshot of the repo plus `SNAPSHOT.json` (repo, revision, commit), which the
GPU jobs read as local paths.

- `names`: snapshot dir names (`org--name@revision`), hub id detection.
- `fetch`: the download itself.
"""

__all__ = ["fetch", "names"]
