"""The warm interpreter: script jobs of a local run start as forks of one
process that has imported torch, transformers and peft once.

- `jobs`: the snakemake side (started from the Snakefile's onstart).
- `server`: the process that preloads and forks.
- `child`: what a fork does to become the job.
- `client`: submitting a job; the command shell rules run through.

Nothing here imports torch at module level (the server does, at start).
"""

__all__ = ["child", "client", "jobs", "server"]
