"""Run the real workflow (snakemake CLI) in temp dirs, for workflow-level tests.

Used by test_faults.py, test_bad_input*.py, test_reproducibility.py and
test_slurm.py. Runs of the micro config are cached per pytest session
(`micro_run`), so tests that only read a finished run share one.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MICRO = REPO / "tests" / "configs" / "micro.yaml"

_RUNS: dict[tuple, Path] = {}


def workdir(path: Path, overrides: dict | None = None) -> Path:
    """A fresh workflow dir: the repo's config/ (the Snakefile's `configfile:`
    is relative to the working dir) and, if given, an overrides config."""
    path.mkdir(parents=True, exist_ok=True)
    # The Snakefile's `configfile:` and the shipped toy weights
    # (resources/toy/base_model) are read relative to the working dir.
    for name in ("config", "resources"):
        link = path / name
        if not link.exists():
            link.symlink_to(REPO / name)
    if overrides is not None:
        (path / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return path


def run_name(path: Path) -> str:
    """The `run` key the micro config (+ overrides) resolves to."""
    merged = yaml.safe_load(MICRO.read_text()) or {}
    over = path / "overrides.yaml"
    if over.exists():
        merged.update(yaml.safe_load(over.read_text()) or {})
    return merged.get("run", "toy")


def results(path: Path) -> Path:
    return path / "results" / run_name(path)


def target(rel: str, path: Path | None = None) -> str:
    """A target under the run dir, relative to the workflow dir."""
    run = run_name(path) if path else (yaml.safe_load(MICRO.read_text()) or {})["run"]
    return f"results/{run}/{rel}"


def _relative(target, path: Path) -> str:
    """Snakemake matches targets as written: make them relative to the dir."""
    t = Path(target)
    return str(t.relative_to(path)) if t.is_absolute() else str(t)


# An exec wrapper that makes the command die with the process that starts it
# (PR_SET_PDEATHSIG = 1), so a killed or timed-out pytest leaves no snakemake
# (whose jobs then stop with it, lorascope.core.processes) writing into its
# base temp. A wrapper, not preexec_fn: that is unsafe with the reference
# build's thread. If the starter died before prctl, exit instead.
_DIE_WITH_STARTER = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL); "
    "os.getppid() == int(sys.argv[1]) or os._exit(1); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def dies_with_this_process(cmd: list[str]) -> list[str]:
    """`cmd` (an absolute program path first) run so that it is SIGKILLed
    when the process (strictly, the thread) that starts it dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return cmd  # no PR_SET_PDEATHSIG: runs as before
    return [sys.executable, "-c", _DIE_WITH_STARTER, str(os.getpid()), *cmd]


def command(path: Path, targets=(), extra=(), wrap: bool = True) -> list[str]:
    """The snakemake CLI on the micro config in `path`; `wrap` (default):
    dying with this process (`dies_with_this_process`)."""
    if not MICRO.exists():
        raise FileNotFoundError(f"{MICRO} is missing (the lead's micro config)")
    # The Snakefile loads config/config.yaml only when no --configfile is
    # given, so the micro overlay is applied on top of it explicitly.
    cfgs = [str(REPO / "config" / "config.yaml"), str(MICRO)]
    if (path / "overrides.yaml").exists():
        cfgs.append(str(path / "overrides.yaml"))
    # Targets first: --configfile takes every following word as a file.
    cmd = [
        sys.executable, "-m", "snakemake",
        *[_relative(t, path) for t in targets],
        "--snakefile", str(REPO / "Snakefile"),
        "--cores", "1",
        "--workflow-profile", "none",
        "--configfile", *cfgs,
        *extra,
    ]  # fmt: skip
    return dies_with_this_process(cmd) if wrap else cmd


def job_stats(log: str) -> dict[str, int] | None:
    """rule -> job count from snakemake's 'Job stats' table (stderr of a run,
    stdout of a dry run); None when there is no table (nothing to do)."""
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal", log, re.S)
    if not m:
        return None
    return {ln.split()[0]: int(ln.split()[1]) for ln in m.group(1).splitlines()}


def env() -> dict[str, str]:
    """The test's environment with this interpreter's bin dir first on PATH
    (shell rules call `python`, as in an activated venv)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    # A run salts its digests from its own .snakemake/lorascope/salt, as a
    # user's does (conftest points the test process at a session file).
    env.pop("LORASCOPE_SALT_FILE", None)
    return env


def snakemake(path, targets=(), extra=(), check=True, timeout=900):
    """Run snakemake in `path`; with check, fail showing the tail of its log."""
    proc = subprocess.run(
        command(path, targets, extra),
        cwd=path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {list(targets)} failed in {path}:\n{proc.stderr[-8000:]}"
        )
    return proc


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def run_and_kill_job(
    path: Path,
    targets,
    job_marker: str,
    when: Callable[[], bool],
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """Start snakemake, and once `when()` holds, SIGKILL the job process whose
    command line contains `job_marker` (as a node failure or OOM kill would);
    snakemake itself survives, sees the job fail and exits nonzero."""
    proc = subprocess.Popen(
        command(path, targets),
        cwd=path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    killed = None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if when():
                jobs = [p for p in descendants(proc.pid) if job_marker in cmdline(p)]
                # The innermost matching process is the python doing the work.
                if jobs:
                    killed = jobs[-1]
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.1)
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if killed is None:
        raise AssertionError(
            f"never saw the moment to kill {job_marker!r} (snakemake exit "
            f"{proc.returncode}):\n{err[-4000:]}"
        )
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def clone(src: Path, dst: Path, keep, overrides: dict | None = None) -> Path:
    """A new workflow dir holding copies of some finished artifacts of `src`
    (paths under the run dir, mtimes kept) and snakemake's metadata (with the
    salt of its digests, lorascope.core.secrets), so only
    what is missing or out of date is recomputed (no second toy pretrain)."""
    work = workdir(dst, overrides)
    for rel in keep:
        src_p, dst_p = results(src) / rel, results(work) / rel
        dst_p.parent.mkdir(parents=True, exist_ok=True)
        if src_p.is_dir():
            shutil.copytree(src_p, dst_p)
        else:
            shutil.copy2(src_p, dst_p)
    # The records and the salt their digests were made with go together.
    for state in ("metadata", "lorascope"):
        if (src / ".snakemake" / state).is_dir():
            shutil.copytree(src / ".snakemake" / state, work / ".snakemake" / state)
    return work


def micro_run(base: Path, overrides: dict, targets=("all",)) -> Path:
    """A finished micro run with these overrides and targets, made once per
    session (callers must not modify it)."""
    key = (yaml.safe_dump(overrides), tuple(map(str, targets or ("all",))))
    if key not in _RUNS:
        path = workdir(base / f"micro-{len(_RUNS)}", overrides)
        snakemake(path, targets)
        _RUNS[key] = path
    return _RUNS[key]


def shared_base(base: Path) -> Path:
    """The folder all pytest-xdist workers of a session share (a worker's own
    basetemp is popen-gwN inside it); without xdist, the basetemp."""
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _build_reference(shared: Path) -> Path:
    """Build the reference run in `shared` once per session, whichever
    worker or thread asks first; the others wait on the lock and reuse it.
    A failed build is recorded, so every waiter reports it instead of
    building again."""
    done, failed = shared / ".reference-done", shared / ".reference-failed"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if failed.exists():
            raise AssertionError(failed.read_text())
        if not done.exists():
            try:
                # One core: with two it competed with the workers and the
                # suite took 21.5 min instead of 17.7 (measured).
                proc = snakemake(workdir(shared, {}), ["all"], timeout=1800)
                Path(f"{shared}.stderr").write_text(proc.stderr)
            except BaseException as e:
                failed.write_text(f"the reference run failed: {e}")
                raise
            done.write_text("ok")
    return shared


def start_reference_build(base: Path) -> threading.Thread:
    """Start the reference run in the background (conftest does, at the
    start of a session that will need it): the tests that do not need it
    run meanwhile, on the other core."""
    shared = shared_base(base) / "reference"

    def build():
        try:
            _build_reference(shared)
        except BaseException:  # recorded in .reference-failed for the tests
            pass

    thread = threading.Thread(target=build, name="reference-run")
    thread.start()
    return thread


def reference_run(base: Path) -> Path:
    """The session's one complete micro run (seed 0, every target): the
    integration test of the whole DAG, and the source every fault, bad-input,
    reproducibility, figure and SLURM test copies from. Shared by the
    session's xdist workers; callers must not modify it. Its snakemake's
    stderr is beside it, in `<run>.stderr`."""
    key = (yaml.safe_dump({}), ("all",))
    if key not in _RUNS:
        reuse = os.environ.get("LORASCOPE_REFERENCE_RUN")
        if reuse:  # a developer's shortcut, never set in CI: bring an
            # earlier reference run up to date instead of building one
            proc = snakemake(Path(reuse), ["all"], timeout=1800)
            Path(f"{reuse}.stderr").write_text(proc.stderr)
            _RUNS[key] = Path(reuse)
        else:
            _RUNS[key] = _build_reference(shared_base(base) / "reference")
    return _RUNS[key]
