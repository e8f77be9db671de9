"""The Snakefile's machinery, used by workflow/rules/common.smk while the
workflow is parsed (nothing here imports torch), not by the stages' logic.

- `codeversion`: content hashes of the code a rule runs (`code_of`).
- `fingerprints`: content fingerprints of the files a user supplies
  (`user_files_of`), so a file restored with an older mtime still reruns.
- `wiring`: the config keys a rule declares (`JobConfig`), runtime keys that
  are never recorded, secrets redacted; jobs read their params through it.
- `environment`: the API keys of the LLM steps about to run, checked before
  any job starts (what the schema cannot express is `lorascope.core.checks`).
- `preflight`: the jobs about to run against this machine and the finished
  artifacts (CUDA devices, target modules, SAE steps), in the same hook;
  it imports torch there only when a check needs it.
- `interrupts`: a SIGINT to snakemake stops the running jobs within seconds.
- `resources` (with `rulecosts`): what each rule needs (GPUs, GPU memory,
  host RAM, time, FLOPs) from the config and the profile's hardware.yaml.
- `plan`: `python -m lorascope.workflow.plan` prints that per rule before
  a run is submitted (`make plan`).
- `config_docs`: config/README.md's key tables, generated from the schema.
- `warm`: a local run's jobs start as forks of one interpreter that has
  imported torch, transformers and peft (started in the Snakefile's onstart).
"""

__all__ = [
    "codeversion",
    "config_docs",
    "environment",
    "fingerprints",
    "interrupts",
    "jobenv",
    "plan",
    "preflight",
    "resources",
    "rulecosts",
    "warm",
    "wiring",
]
