"""What every job inherits from the snakemake that starts it, set up once by
workflow/rules/common.smk while the Snakefile is parsed.

- The package: `src/` on PYTHONPATH (jobs inherit the environment, on SLURM
  too), so jobs import this checkout's lorascope.
- The watch: jobs stop with their children if this snakemake dies, even by
  SIGKILL (`lorascope.core.processes`): a paid API or GPU job must not
  outlive its run.
- Interrupts: a SIGINT stops the running jobs too
  (`lorascope.workflow.interrupts`).
"""

from __future__ import annotations

import os

from lorascope.core.processes import snakemake_environment
from lorascope.workflow.interrupts import stop_jobs_on_interrupt

__all__ = ["prepare_jobs"]


def prepare_jobs(src: str) -> None:
    """Put `src` on the jobs' PYTHONPATH, name this process as the one jobs
    watch, and stop running jobs on SIGINT."""
    paths = (src, os.getenv("PYTHONPATH"))
    os.environ.update(PYTHONPATH=os.pathsep.join(p for p in paths if p))
    os.environ.update(snakemake_environment())
    stop_jobs_on_interrupt()
