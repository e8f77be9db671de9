"""A stopped run stops its jobs (issue 33, item 10).

- SIGKILL of snakemake (the OOM killer, a lost node): the running job, a
  shell rule included (eval_generate: `python -m lorascope.evaluation`),
  stops within seconds with every process of its group, and writes nothing.
- SIGINT (Ctrl-C, `kill -INT`): the running jobs are stopped within seconds
  instead of waited for (Snakemake then threw their outputs away as
  incomplete); a job that finished before the interrupt keeps its output
  and is not rerun.

The eval tests copy the session's micro reference run (hf backend: one
generation job per variant). The last test runs a three-rule Snakefile with
the same two lines common.smk runs, so it needs no reference run: with two
jobs running at once, Snakemake's main thread ran its SIGINT handler only
when a job ended (measured 15.4 s for a 15 s job), which is why
lorascope.workflow.interrupts stops the jobs from a thread.
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
import wfrun

pytestmark = pytest.mark.timeout(600)

UP_TO_ADAPTER = ["toy", "data", "train/rank1/adapter"]


def running(pids) -> list[int]:
    """The pids that still run (not gone, not zombies)."""
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in "ZX":
            out.append(pid)
    return out


def group_members(pgids) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:
            found.append(int(stat.parent.name))
    return found


def job_processes(root: int, marker: str) -> list[int]:
    """The job processes under `root` whose command line holds `marker`,
    their descendants and the members of their process groups."""
    jobs = [p for p in wfrun.descendants(root) if marker in wfrun.cmdline(p)]
    found = set(jobs)
    for pid in jobs:
        found.update(wfrun.descendants(pid))
    pgids = set()
    for pid in list(found):
        try:
            pgids.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    pgids.discard(os.getpgid(root))  # snakemake's own group: not the job's
    found.update(group_members(pgids))
    return sorted(found)


def start(work, targets, extra=()):
    return subprocess.Popen(
        wfrun.command(work, targets, extra),
        cwd=work,
        env=wfrun.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(cond, proc, what, timeout=300):
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(
                f"snakemake ended before {what}:\n{proc.stderr.read()}"
            )
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.1)


def cleanup(proc):
    for pid in [proc.pid, *wfrun.descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return wfrun.reference_run(tmp_path_factory.getbasetemp())


def test_killed_snakemake_stops_eval_generate_with_its_processes(reference, tmp_path):
    work = wfrun.clone(reference, tmp_path / "w", UP_TO_ADAPTER)
    out = wfrun.results(work) / "eval/generations/base"
    log = work / "logs" / wfrun.run_name(work) / "eval/eval_generate_base.log"
    proc = start(work, [wfrun.target("eval/generations/base")])
    try:
        # Past its imports and its guard: the job is generating.
        wait_for(lambda: log.exists() and "backend hf" in log.read_text(), proc,
                 "the generation job start")  # fmt: skip
        procs = job_processes(proc.pid, "lorascope.evaluation")
        assert procs, "no generation job process found"
        os.kill(proc.pid, signal.SIGKILL)  # snakemake alone
        proc.wait()
        t0 = time.monotonic()
        while running(procs) and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        stopped_s = time.monotonic() - t0
        left = running(procs)
        time.sleep(2)  # what a surviving job would need to write its output
    finally:
        cleanup(proc)
    assert not left, f"job processes outlived snakemake: {left}"
    assert stopped_s < 5, f"the job stopped {stopped_s:.1f} s after snakemake"
    assert not out.exists(), "the job wrote its output after its run died"
    assert "is gone" in log.read_text()


def interrupt(proc, procs) -> tuple[float, list]:
    """SIGINT snakemake (as Ctrl-C does): seconds until it exits, and which
    of the job processes `procs` still run then."""
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    proc.wait(timeout=60)
    return time.monotonic() - t0, running(procs)


def test_sigint_stops_the_running_job_and_keeps_the_finished_one(reference, tmp_path):
    work = wfrun.clone(reference, tmp_path / "w", UP_TO_ADAPTER)
    gens = wfrun.results(work) / "eval/generations"
    targets = [wfrun.target(f"eval/generations/{v}") for v in ("base", "rank1")]
    proc = start(work, targets)
    try:
        # One core: the second job starts once the first is done and recorded.
        wait_for(lambda: (gens / "base").exists() or (gens / "rank1").exists(),
                 proc, "the first generation job's output")  # fmt: skip
        first = "base" if (gens / "base").exists() else "rank1"
        second = "rank1" if first == "base" else "base"
        marker = f"generations/{second}"
        wait_for(lambda: job_processes(proc.pid, marker), proc, "the second job")
        procs = job_processes(proc.pid, marker)
        stopped_s, left = interrupt(proc, procs)
    finally:
        cleanup(proc)
    assert proc.returncode != 0
    assert not left, f"the interrupted job still runs: {left}"
    assert stopped_s < 10, f"snakemake took {stopped_s:.1f} s to stop"
    assert not (gens / second).exists(), "the interrupted job wrote its output"
    assert (gens / first).is_dir(), "the finished job's output was removed"
    dry = wfrun.snakemake(work, targets, extra=["-n"])
    assert wfrun.job_stats(dry.stdout) == {"eval_generate": 1}, dry.stdout[-3000:]
    assert f"generations/{second}" in dry.stdout
    assert f"output: {gens.relative_to(work) / first}" not in dry.stdout


# Two jobs at once (a shell command and a script), after one that finishes.
SNAKEFILE = """
import os, sys
sys.path.insert(0, {src!r})
os.environ["PYTHONPATH"] = {src!r}
from lorascope.core.processes import snakemake_environment
from lorascope.workflow.interrupts import stop_jobs_on_interrupt
os.environ.update(snakemake_environment())
stop_jobs_on_interrupt()

rule all:
    input: "shell.txt", "script.txt"

rule first:
    output: "first.txt"
    shell: "echo done > {{output}}"

rule slow_shell:
    input: "first.txt"
    output: "shell.txt"
    shell: "{python} job.py {{output}}"

rule slow_script:
    input: "first.txt"
    output: "script.txt"
    script: "job_script.py"
"""
JOB = """
import subprocess, sys, time
from lorascope.core.processes import stop_when_snakemake_dies
stop_when_snakemake_dies()
subprocess.Popen(["sleep", "120"])
time.sleep(30)
open(sys.argv[1], "w").write("late")
"""
JOB_SCRIPT = """
import subprocess, time
from lorascope.core.runtime import script_logging
with script_logging(snakemake):
    subprocess.Popen(["sleep", "121"])
    time.sleep(30)
    open(snakemake.output[0], "w").write("late")
"""


def test_sigint_with_two_jobs_running_stops_both_at_once(tmp_path):
    (tmp_path / "Snakefile").write_text(
        SNAKEFILE.format(src=str(wfrun.REPO / "src"), python=sys.executable)
    )
    (tmp_path / "job.py").write_text(textwrap.dedent(JOB))
    (tmp_path / "job_script.py").write_text(textwrap.dedent(JOB_SCRIPT))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "3"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=wfrun.env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        # Both slow jobs and both their sleeping children run.
        def children():
            lines = [wfrun.cmdline(p) for p in wfrun.descendants(proc.pid)]
            return {c.strip() for c in lines if c.startswith("sleep 12")}

        wait_for(lambda: len(children()) == 2, proc, "the jobs' children")
        procs = job_processes(proc.pid, "job")
        stopped_s, left = interrupt(proc, procs)
    finally:
        cleanup(proc)
    assert not left, f"still running after the SIGINT: {left}"
    assert stopped_s < 8, f"snakemake took {stopped_s:.1f} s to stop"
    assert (tmp_path / "first.txt").read_text() == "done\n"
    assert not (tmp_path / "shell.txt").exists()
    assert not (tmp_path / "script.txt").exists()
    dry = subprocess.run(
        [*cmd, "-n"], cwd=tmp_path, env=wfrun.env(), capture_output=True, text=True
    )
    assert "rule first" not in dry.stdout, "the finished job would rerun"


def test_a_killed_test_process_takes_its_snakemake_with_it(tmp_path):
    """The suite's own runs (wfrun.command) die with the pytest process that
    started them: a timed-out or killed session used to leave its reference
    build running, writing into a base temp the next session reused. The
    wrapper is checked on a stand-in command (a sleep), started by a
    stand-in test process that is then SIGKILLed."""
    starter = textwrap.dedent(
        f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(Path(wfrun.__file__).parent)!r})
        import wfrun
        child = subprocess.Popen(wfrun.dies_with_this_process(["/bin/sleep", "60"]))
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True
    )
    sleeper = int(proc.stdout.readline())
    deadline = time.monotonic() + 10
    # Wait until the wrapper has become the sleep (exec keeps the pid).
    while "sleep" not in wfrun.cmdline(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running([sleeper]), "the command did not start"
    proc.kill()
    proc.wait()
    while running([sleeper]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running([sleeper]), "the command outlived the process that started it"
