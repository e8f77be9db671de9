"""An interrupted run stops its jobs within seconds, with their children.

Used by `workflow/rules/common.smk` while the Snakefile is parsed. On SIGINT
(Ctrl-C, `kill -INT`) Snakemake stops scheduling, then waits for every
running job to end on its own, and marks what those jobs wrote incomplete:
an hour of training finished after the interrupt and was thrown away. Jobs
lead their own process groups (`lorascope.core.processes`), so a Ctrl-C at
the terminal does not reach them either. This handler stops them first:
SIGTERM to each job's process group (and to the job processes still in
snakemake's group: shells, a job still importing), SIGKILL to what is left
after `grace_s`, then Snakemake's own handling (KeyboardInterrupt). A job
that finished before the interrupt was already recorded and keeps its
output; a stopped job's output never appears (it is written atomically at
its end).

SIGTERM keeps Snakemake's meaning (finish the running jobs, keep their
outputs). A SIGKILL of snakemake is handled by the jobs themselves
(`lorascope.core.processes.stop_when_snakemake_dies`).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from lorascope.core.processes import descendants

__all__ = ["stop_jobs", "stop_jobs_on_interrupt"]

_installed = False


def _signal_all(procs: list[tuple[int, int]], sig: int) -> None:
    own, groups = os.getpgrp(), set()
    for pid, pgid in procs:
        try:
            if pgid == own:  # still in snakemake's group: this process only
                os.kill(pid, sig)
            elif pgid not in groups:  # a job's own group: all of it
                groups.add(pgid)
                os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_jobs(grace_s: float = 5.0) -> list[int]:
    """SIGTERM every descendant of this process (whole process groups where
    a job leads one), SIGKILL those still there after `grace_s`. Returns the
    pids that were running."""
    procs = descendants(os.getpid())
    if not procs:
        return []
    _signal_all(procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = procs
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        live = {pid for pid, _ in descendants(os.getpid())}
        left = [p for p in left if p[0] in live]
    _signal_all(left, signal.SIGKILL)
    return [pid for pid, _ in procs]


def _stop_on_wakeup(read_fd: int, grace_s: float) -> None:
    """Stop the jobs as soon as a SIGINT reaches any thread of snakemake.

    Python runs signal handlers in the main thread only, when it next runs
    Python code; Snakemake's main thread sleeps on a semaphore until a job
    ends, so its handler would run only after the job it should stop (the
    signal usually lands on a job's waiting thread). The C-level handler
    writes every caught signal's number to the wakeup fd at once, from any
    thread: this thread reads it."""
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return
        if signal.SIGINT in data:
            stop_jobs(grace_s)


def stop_jobs_on_interrupt(grace_s: float = 5.0) -> None:
    """Install the SIGINT handling (once, main thread only). A SIGINT that
    was ignored when snakemake started (nohup, a background job of a
    script) stays ignored."""
    global _installed
    if _installed:
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        return

    def handler(signum, frame):
        stop_jobs(grace_s)  # if the wakeup thread could not (see below)
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (Snakemake run from a thread)
        return
    _installed = True
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    other = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    if other != -1:
        # Someone else's wakeup fd (an event loop's): give it back; the
        # handler above still stops the jobs, once the main thread runs.
        signal.set_wakeup_fd(other)
        os.close(read_fd)
        os.close(write_fd)
        return
    threading.Thread(
        target=_stop_on_wakeup,
        args=(read_fd, grace_s),
        name="stop-jobs-on-sigint",
        daemon=True,
    ).start()
