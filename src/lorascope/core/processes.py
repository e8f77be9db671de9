"""A job lives and dies with the snakemake run that started it.

Snakemake starts every job (shell or script) as its child. A SIGKILL or OOM
kill of snakemake alone takes none of them with it, so a generation job would
go on holding its GPUs and write an output nobody records, and an autointerp
job would go on paying for requests. So:

- `workflow/rules/common.smk` puts `snakemake_environment()` into the
  environment while the Snakefile is parsed: the pid of that snakemake, its
  start time (a reused pid is not it) and its pid namespace (a job in another
  one cannot see it, so it cannot watch it).
- Every job entry point calls `stop_when_snakemake_dies()` first (scripts
  through `lorascope.core.runtime.script_logging`, the shell rules' modules
  `lorascope.train` and `lorascope.evaluation` in their `__main__`). A job
  whose snakemake is already gone stops at once; otherwise the job becomes
  the leader of its own process group (its children, such as vLLM's engine
  core or the grading child, join it) and a thread checks every second;
  when snakemake is gone, the job kills every process of its group and its
  descendants, and exits.
- `run_alive()` says whether the run is still there: `lorascope.core.io`
  commits no artifact of a job whose run is gone (nobody would record it).

The snakemake side (SIGINT stops the running jobs instead of waiting for
them) is `lorascope.workflow.interrupts`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = [
    "STOPPED_EXIT",
    "descendants",
    "run_alive",
    "snakemake_environment",
    "stop_when_snakemake_dies",
]

log = logging.getLogger("lorascope")

PID_ENV = "LORASCOPE_SNAKEMAKE_PID"
START_ENV = "LORASCOPE_SNAKEMAKE_START"
PIDNS_ENV = "LORASCOPE_SNAKEMAKE_PIDNS"
# Exit status of a job stopped because its run is gone (EX_SOFTWARE).
STOPPED_EXIT = 70
_PROC = Path("/proc")
_guard: threading.Thread | None = None


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        return (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int | str) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # starttime, clock ticks since boot


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def snakemake_environment() -> dict[str, str]:
    """What a job needs to watch this process (set by common.smk)."""
    env = {PID_ENV: str(os.getpid())}
    start, ns = _start_time(os.getpid()), _pid_namespace()
    if start:
        env[START_ENV] = start
    if ns:
        env[PIDNS_ENV] = ns
    return env


def _alive(pid: int, start: str | None = None) -> bool:
    """Whether `pid` runs and is the process that started at `start` (a
    zombie, killed but not yet reaped, does not run)."""
    if _PROC.joinpath("self", "stat").exists():
        fields = _stat(pid)
        if fields is None or fields[0] in "ZX":
            return False
        return start is None or fields[19] == start
    try:  # no /proc (macOS): existence only
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _watched() -> tuple[int, str | None] | None:
    """(pid, start time) of the snakemake this job can watch, or None: not
    started by snakemake, started in process (the parser's own pid), or in
    another pid namespace (a container), where that pid means nothing."""
    pid = int(os.environ.get(PID_ENV) or 0)
    if not pid or pid == os.getpid():
        return None
    ns = os.environ.get(PIDNS_ENV)
    if ns and ns != _pid_namespace():
        return None
    return pid, os.environ.get(START_ENV)


def run_alive() -> bool:
    """Whether the snakemake that started this job still runs (True outside
    a snakemake job, or where it cannot be watched)."""
    watched = _watched()
    return watched is None or _alive(*watched)


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, process group) of every live descendant of `root` (from /proc;
    empty without it), parents before children."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in _PROC.glob("[0-9]*"):
        fields = _stat(entry.name)
        if fields and fields[0] not in "ZX":
            children.setdefault(int(fields[1]), []).append(
                (int(entry.name), int(fields[2]))
            )
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child[0])
    return out


def _group_members(pgid: int) -> list[int]:
    found = []
    for entry in _PROC.glob("[0-9]*"):
        fields = _stat(entry.name)
        if fields and int(fields[2]) == pgid and fields[0] not in "ZX":
            found.append(int(entry.name))
    return found


def _kill_own_processes() -> None:
    """SIGKILL this job's descendants and the rest of its process group (the
    children that lost their parent stay in the group)."""
    me = os.getpid()
    if not _PROC.joinpath("self", "stat").exists():
        if os.getpgrp() == me:
            os.killpg(me, signal.SIGKILL)  # no /proc: this process goes too
        return
    victims = {pid for pid, _ in descendants(me)}
    if os.getpgrp() == me:
        victims.update(_group_members(me))
    for pid in victims - {me}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop(pid: int, when: str) -> None:
    log.error(
        "snakemake (pid %d) is gone%s: stopping this job (pid %d) and its processes",
        pid,
        when,
        os.getpid(),
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    _kill_own_processes()
    os._exit(STOPPED_EXIT)


def stop_when_snakemake_dies(interval_s: float = 1.0) -> threading.Thread | None:
    """Stop this job, its children included, within `interval_s` of the
    snakemake that started it dying; at once if it is already gone.

    Call it first thing in a job (idempotent). Returns the watching thread,
    or None outside a snakemake job.
    """
    global _guard
    watched = _watched()
    if watched is None:
        return None
    if _guard is not None:
        return _guard
    pid, start = watched
    if not _alive(pid, start):
        # snakemake died while this job was starting (its imports take
        # seconds): nothing will record what it writes.
        _stop(pid, " before this job started")
    if os.getpgrp() != os.getpid():
        try:
            os.setpgid(0, 0)  # its own group: its children go with it
        except OSError:  # a session leader already leads its group
            pass

    def watch():
        while _alive(pid, start):
            time.sleep(interval_s)
        _stop(pid, "")

    _guard = threading.Thread(target=watch, name="stop-with-snakemake", daemon=True)
    _guard.start()
    return _guard
