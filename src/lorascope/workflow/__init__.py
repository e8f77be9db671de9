"""The Snakefile's machinery, used by workflow/rules/common.smk while the
workflow is parsed (nothing here imports torch), not by the stages' logic.

- `codeversion`: content hashes of the code a rule runs (`code_of`).
- `wiring`: the config keys a rule declares (`JobConfig`), runtime keys that
  are never recorded, secrets redacted; jobs read their params through it.
- `checks`: what the schema cannot express (paths, names, SAE width, keys),
  and the environment (API keys) before any job starts.
- `resources` (with `rulecosts`): what each rule needs (GPUs, GPU memory,
  host RAM, time, FLOPs) from the config and the profile's hardware.yaml.
- `plan`: `python -m lorascope.workflow.plan` prints that per rule before
  a run is submitted (`make plan`).
"""

__all__ = ["checks", "codeversion", "plan", "resources", "rulecosts", "wiring"]
