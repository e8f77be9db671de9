"""The snakemake side of the warm interpreter: a local run's jobs start as
forks of one process that has imported torch, transformers and peft.

Snakemake runs a `script:` job as `python <script>` in a shell, and the
shell rules run `python -m lorascope.train` / `lorascope.evaluation`: every
job paid the interpreter's start-up and its imports (torch, transformers and
peft alone cost 4-5 CPU seconds a job on this project's CPUs). In a local
run (not on a cluster, not a dry run) the Snakefile's `onstart` calls
`start(workflow, logger)`, which starts `warm.server` and then
- routes each script job to it (Snakemake's PythonScript.execute_script is
  wrapped: the job runs in a fork, this thread waits for its status), and
- gives shell rules a launcher, `python_command(python)`, that goes through
  `warm.client` (the rule's params functions ask for it).

A job runs the usual way where a fork cannot stand in for a fresh
interpreter: a conda env, container or env module (another interpreter), a
benchmark or shadow directory (Snakemake measures or moves the process), a
GPU (no CUDA state may cross a fork), a rule in FRESH_RULES (it changes
its environment before an import), an environment that differs from the
server's in more than the per-job thread and tmpdir variables (logged), or a
server that is not running (it failed its preload or exited: a warning says
so once). A job whose server died
while it ran fails, like a job whose process was killed.

It starts when at least MIN_JOBS jobs are to run (the preload costs what a
few jobs' start-up does). `LORASCOPE_WARM_JOBS=0` in the environment turns
it off, `LORASCOPE_WARM_JOBS=1` on for any number of jobs.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shlex
import socket
import subprocess
import sys
import threading

from lorascope.workflow.warm.client import ADDRESS_ENV, submit
from lorascope.workflow.warm.server import THREAD_ENV, TMP_ENV

__all__ = ["MIN_JOBS", "WARM_ENV", "job_environment", "python_command", "start"]

# "0": never; "1": always; unset: when at least MIN_JOBS jobs are to run.
WARM_ENV = "LORASCOPE_WARM_JOBS"
# The preload costs about 5 CPU seconds (bench_dag: "CPU of the warm
# interpreter"), what two or three cold jobs spend starting: a rerun of one
# or two jobs (a figure edited) starts them the usual way.
MIN_JOBS = 3
# Rules whose script changes the environment before importing a library the
# server has imported: hub_fetch turns the hub back on (the user's
# HF_HUB_OFFLINE) before huggingface_hub reads it, once, at import.
FRESH_RULES = frozenset({"hub_fetch"})
STOP_GRACE_S = 10.0


def job_environment(threads, resources) -> dict[str, str]:
    """The environment snakemake.shell gives a job (kept in step with
    Snakemake 9's shell(): thread counts and the tmpdir resource)."""
    env = dict(os.environ)
    for name in THREAD_ENV:
        env[name] = str(threads)
    tmpdir = (resources or {}).get("tmpdir")
    if tmpdir:
        for name in TMP_ENV:
            env[name] = tmpdir
    return env


class _Warm:
    """The running server and the socket jobs reach it on."""

    def __init__(self, log, modules: tuple[str, ...] = ()):
        self.log = log
        # an abstract socket (Linux): nothing on disk to clean up
        self.address = f"lorascope-warm-{os.getpid()}-{secrets.token_hex(8)}"
        # Jobs inherit the address (the shell rules' client reads it); set
        # before the server starts, so its environment and theirs agree.
        os.environ[ADDRESS_ENV] = self.address
        server_env = dict(os.environ)
        for name in THREAD_ENV:  # numpy's BLAS pool would be a thread
            server_env[name] = "1"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind("\0" + self.address)
        listener.listen(128)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lorascope.workflow.warm.server",
             str(listener.fileno()), *modules],
            pass_fds=[listener.fileno()],
            stdin=subprocess.DEVNULL,
            env=server_env,
        )  # fmt: skip
        # Only the server holds the socket now: once it exits, connecting fails
        # instead of waiting in the backlog of a socket nobody accepts on.
        listener.close()
        self.alive = True
        self._lock = threading.Lock()

    def gone(self, why: str) -> None:
        with self._lock:
            if self.alive:
                self.alive = False
                code = self.process.poll()
                # f-strings: Snakemake's log handler prints msg, not msg % args
                self.log.warning(
                    f"warm interpreter {why} (exit status {code}): jobs start "
                    "their own interpreters from now on"
                )

    def run(self, argv: list[str], env: dict[str, str], job=None) -> int | None:
        """`python ARGV` in a fork of the server: its return code, or None
        when the server did not run it (the caller runs it itself)."""
        kind, value = submit(self.address, argv, env)
        if kind == "gone":
            self.gone(value)
            return None
        if kind == "cold":
            self.log.info(f"job {job} starts its own interpreter: {value}")
            return None
        return value

    def stop(self) -> None:
        """SIGTERM: the server exits once its jobs have; SIGKILL after grace."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_warm: _Warm | None = None


def _cold_reason(script, edit: bool) -> str | None:
    """Why `script` (a snakemake PythonScript) must start its own
    interpreter, or None."""
    for attr in ("conda_env", "container_img", "env_modules", "bench_record",
                 "shadow_dir"):  # fmt: skip
        if getattr(script, attr, None):
            return attr
    if getattr(script, "rulename", None) in FRESH_RULES:
        return "rule"
    if _gpus(getattr(script, "resources", None)):
        return "gpu"
    return "edit" if edit else None


def _gpus(resources) -> int:
    """GPUs a job was given. A GPU job starts its own interpreter: a fork
    must not inherit whatever CUDA driver state an import left in the server,
    and start-up is small against a GPU job's run."""
    return int((resources or {}).get("gpu", 0) or 0)


def _execute_script(original):
    def execute_script(self, fname, edit=False):
        warm = _warm
        if warm is None or not warm.alive or _cold_reason(self, edit):
            return original(self, fname, edit=edit)
        env = job_environment(self.threads, self.resources)
        status = warm.run([os.path.abspath(fname)], env, job=self.jobid)
        if status is None:
            return original(self, fname, edit=edit)
        if status:
            cmd = f"{sys.executable} {fname} (in the warm interpreter)"
            raise subprocess.CalledProcessError(status, cmd)

    execute_script.warm = True
    return execute_script


def python_command(python: str, gpus: int = 0) -> str:
    """The shell words that run `python` for a shell rule: through the warm
    interpreter's client when it runs, `python` is its interpreter and the
    job has no GPU."""
    if _warm is None or not _warm.alive or python != sys.executable or gpus:
        return shlex.quote(python)
    return shlex.join([python, "-m", "lorascope.workflow.warm.client"])


def _jobs_to_run(workflow) -> int:
    """How many jobs this run will execute (as many as MIN_JOBS where
    Snakemake's DAG cannot be read)."""
    try:
        return sum(1 for _ in workflow.dag.needrun_jobs())
    except AttributeError:  # Snakemake moved its DAG
        return MIN_JOBS


def start(workflow, log, modules: tuple[str, ...] = ()) -> bool:
    """Start the warm interpreter for this run's jobs when the run executes
    jobs locally (True if started)."""
    global _warm
    if _warm is not None:
        return True
    wanted = os.environ.get(WARM_ENV, "")
    if wanted == "0":
        return False
    local = workflow.local_exec and workflow.is_main_process
    if not local or workflow.dryrun or workflow.touch:
        return False
    if wanted != "1" and _jobs_to_run(workflow) < MIN_JOBS:
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return False  # the server needs pidfds and PR_SET_PDEATHSIG
    from snakemake.script import PythonScript

    if not getattr(PythonScript.execute_script, "warm", False):
        PythonScript.execute_script = _execute_script(PythonScript.execute_script)
    _warm = _Warm(log, modules)
    atexit.register(_warm.stop)
    log.info(f"jobs start in a warm interpreter (pid {_warm.process.pid}; "
             f"{WARM_ENV}=0 turns it off)")  # fmt: skip
    return True
