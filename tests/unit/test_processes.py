"""A job stops with the snakemake that started it, children included; a
SIGINT to snakemake stops its running jobs at once (issue 33, item 10).

A stand-in "snakemake" (a sleeping process) and stand-in jobs (python
processes that call the guard and start a child) keep these at a few seconds;
tests/workflow/test_stopped_run.py does the same through the real workflow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO

from lorascope.core import processes
from lorascope.core.io import atomic_path

pytestmark = pytest.mark.timeout(120)


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def wait_gone(pids, within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if not gone(p)]


def env_watching(pid: int, start: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), processes.PID_ENV: str(pid)}
    env.pop(processes.START_ENV, None)
    env.pop(processes.PIDNS_ENV, None)
    if start is not None:
        env[processes.START_ENV] = start
    return env


# A job: the guard first, then a child of its own, then work that would end
# by committing an output (an atomic write, as every artifact is written).
JOB = textwrap.dedent(
    """
    import subprocess, sys, time
    from lorascope.core.processes import stop_when_snakemake_dies
    stop_when_snakemake_dies(interval_s=0.2)
    child = subprocess.Popen(["sleep", "120"])
    print(child.pid, flush=True)
    time.sleep(float(sys.argv[2]))
    from lorascope.core.io import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_text("done")
    """
)


def start_job(tmp_path, env, work_s=60.0):
    out = tmp_path / "out.txt"
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, str(out), str(work_s)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return job, out


@pytest.fixture()
def fake_snakemake():
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


def test_job_and_its_children_stop_when_snakemake_is_killed(tmp_path, fake_snakemake):
    start = processes._start_time(fake_snakemake.pid)
    job, out = start_job(tmp_path, env_watching(fake_snakemake.pid, start))
    child = int(job.stdout.readline())
    assert processes.descendants(job.pid), "the job's child is not running"
    assert os.getpgid(job.pid) == job.pid, "the job does not lead its own group"

    fake_snakemake.kill()  # SIGKILL, as the OOM killer would
    t0 = time.monotonic()
    job.wait(timeout=10)
    stopped_s = time.monotonic() - t0
    assert job.returncode == processes.STOPPED_EXIT, job.stderr.read()
    assert stopped_s < 3, f"the job ran {stopped_s:.1f} s after snakemake died"
    assert not wait_gone([child], 3), "the job's child outlived it"
    assert "is gone" in job.stderr.read()
    assert not out.exists()


def test_job_started_after_snakemake_died_stops_at_once(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: the pid runs nothing
    job, out = start_job(tmp_path, env_watching(dead.pid, None), work_s=0)
    job.wait(timeout=30)
    err = job.stderr.read()
    assert job.returncode == processes.STOPPED_EXIT, err
    assert "is gone before this job started" in err
    assert job.stdout.read() == "", "the job got past the guard"
    assert not out.exists()


def test_a_reused_pid_is_not_the_snakemake(tmp_path, fake_snakemake):
    """The pid runs, but a process started at another time is not the
    snakemake that started the job (pid reuse)."""
    start = str(int(processes._start_time(fake_snakemake.pid)) - 1)
    job, out = start_job(tmp_path, env_watching(fake_snakemake.pid, start), 0)
    job.wait(timeout=30)
    assert job.returncode == processes.STOPPED_EXIT, job.stderr.read()
    assert not out.exists()


def test_job_finishes_while_snakemake_runs(tmp_path, fake_snakemake):
    start = processes._start_time(fake_snakemake.pid)
    job, out = start_job(tmp_path, env_watching(fake_snakemake.pid, start), 0.5)
    job.wait(timeout=30)
    assert job.returncode == 0, job.stderr.read()
    assert out.read_text() == "done"


def test_nothing_is_committed_once_the_run_is_gone(tmp_path, monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    monkeypatch.setenv(processes.PID_ENV, str(dead.pid))
    monkeypatch.delenv(processes.START_ENV, raising=False)
    monkeypatch.delenv(processes.PIDNS_ENV, raising=False)
    assert not processes.run_alive()
    with pytest.raises(RuntimeError, match="snakemake run is gone"):
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("{}")
    assert list(tmp_path.iterdir()) == []


def test_another_pid_namespace_is_not_watched(monkeypatch):
    """In a container with its own pid namespace the pid names another
    process: the job cannot watch it, and must not stop for it."""
    monkeypatch.setenv(processes.PID_ENV, "1")
    monkeypatch.setenv(processes.PIDNS_ENV, "pid:[1]")
    assert processes.run_alive()
    assert processes.stop_when_snakemake_dies() is None


def test_snakemake_environment_names_this_process():
    env = processes.snakemake_environment()
    assert env[processes.PID_ENV] == str(os.getpid())
    assert env[processes.START_ENV] == processes._start_time(os.getpid())


# --- SIGINT to snakemake ------------------------------------------------------

# A stand-in snakemake: the handler installed as common.smk does, one job in
# its own process group (with a child) and one still in snakemake's group,
# each waited on by a thread; the main thread sleeps on a semaphore as
# Snakemake's scheduler does, so Python's own handler would run only when a
# job ends.
SCHEDULER = textwrap.dedent(
    """
    import subprocess, sys, threading, time
    from lorascope.workflow.interrupts import stop_jobs_on_interrupt
    stop_jobs_on_interrupt(grace_s=2)
    own_group = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess, time; os.setpgid(0, 0);"
         "subprocess.Popen(['sleep', '120']); time.sleep(120)"])
    same_group = subprocess.Popen(["sleep", "121"])
    done = threading.Semaphore(0)
    for p in (own_group, same_group):
        threading.Thread(target=lambda p=p: (p.wait(), done.release())).start()
    print("ready", flush=True)
    try:
        done.acquire()
        print("a job ended on its own", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
)


def test_sigint_stops_the_running_jobs_within_seconds():
    sched = subprocess.Popen(
        [sys.executable, "-c", SCHEDULER],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sched.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while len(processes.descendants(sched.pid)) < 3:
            assert time.monotonic() < deadline, "the jobs did not start"
            time.sleep(0.05)
        jobs = [pid for pid, _ in processes.descendants(sched.pid)]
        sched.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        left = wait_gone(jobs, 8)
        stopped_s = time.monotonic() - t0
        out, _ = sched.communicate(timeout=10)
    finally:
        for pid, _ in processes.descendants(sched.pid):
            os.kill(pid, signal.SIGKILL)
        sched.kill()
    assert not left, f"still running after the SIGINT: {left}"
    assert stopped_s < 4, f"the jobs took {stopped_s:.1f} s to stop"
    assert "interrupted" in out, out
