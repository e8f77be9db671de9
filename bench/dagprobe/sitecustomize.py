"""Per-process probe for bench/bench_dag.py (never imported by the workflow).

bench_dag.py puts this folder first on PYTHONPATH of the snakemake it starts,
so every Python process of the run (snakemake, its jobs, their helpers) loads
it at start-up and, at exit, writes one JSON record to $LORASCOPE_DAGPROBE:
its command line, start/end time, its own CPU (and its waited children's),
the modules it imported (for the start-up replay), and for a `script:` job
the rule and outputs Snakemake handed it. A fork that runs Python to its end
(a job of the warm interpreter, lorascope.workflow.warm.server) writes its own
record: its clock restarts at the fork, and it lists the modules it inherited
(start-up it did not pay). Cost: a few imports Python already
has loaded (os, sys, time, atexit), and the dump at exit.
"""

import atexit
import os
import sys
import time

_OUT = os.environ.get("LORASCOPE_DAGPROBE")
_T0 = time.time()
_INHERITED: list[str] = []


def _forked() -> None:
    global _T0, _INHERITED
    _T0 = time.time()
    _INHERITED = list(sys.modules)


def _dump() -> None:
    import json
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    job = None
    # a `script:` job's preamble puts the job's `snakemake` object in __main__
    smk = getattr(sys.modules.get("__main__"), "snakemake", None)
    if hasattr(smk, "rule") and hasattr(smk, "output"):
        job = {"rule": smk.rule, "output": [str(p) for p in smk.output]}
    here = os.path.dirname(os.path.abspath(__file__))
    record = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "argv": sys.argv,
        "executable": sys.executable,
        "cwd": os.getcwd(),
        "start": _T0,
        "end": time.time(),
        "cpu": me.ru_utime + me.ru_stime,
        "children_cpu": kids.ru_utime + kids.ru_stime,
        "job": job,
        "sys_path": [p for p in sys.path if os.path.abspath(p or ".") != here],
        "modules": [
            m for m in list(sys.modules) if m not in ("__main__", "sitecustomize")
        ],
        "inherited": _INHERITED,
    }
    path = os.path.join(_OUT, f"{os.getpid()}-{int(_T0 * 1e6)}.json")
    with open(path, "w") as fh:
        json.dump(record, fh)


if _OUT:
    atexit.register(_dump)
    os.register_at_fork(after_in_child=_forked)
