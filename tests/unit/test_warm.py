"""The warm interpreter (lorascope.workflow.warm): a job forked from it
behaves as `python script` / `python -m module` would, and a server that is
not there, or dies, loses no job silently.

The servers here preload only `json` (what the tests need is the fork, not
torch); the reference runs (tests/workflow) run every script job of the
embedded workflow through the real preload.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lorascope.workflow.warm import client, jobs, server

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the warm interpreter is Linux-only"
)
LOG = logging.getLogger("test_warm")


@pytest.fixture
def warm(monkeypatch):
    monkeypatch.delenv(client.ADDRESS_ENV, raising=False)  # restored after
    started = jobs._Warm(LOG, modules=("json",))
    # the server's environment (pytest changes PYTEST_CURRENT_TEST per phase)
    started.test_env = dict(os.environ)
    yield started
    started.stop()


def _env(warm, threads: int = 1, tmpdir: str | None = None) -> dict[str, str]:
    """A job's environment as job_environment() makes it, from the server's."""
    env = dict(warm.test_env)
    for name in server.THREAD_ENV:
        env[name] = str(threads)
    for name in server.TMP_ENV if tmpdir else ():
        env[name] = tmpdir
    return env


def _write(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def test_a_job_gets_what_a_fresh_interpreter_would(warm, tmp_path):
    out = tmp_path / "seen.json"
    script = _write(
        tmp_path,
        "job.py",
        f"""
import atexit, json, os, sys, tempfile
atexit.register(lambda: open({str(out)!r} + ".atexit", "w").write("ran"))
json.dump({{"argv": sys.argv, "file": __file__, "name": __name__,
           "path0": sys.path[0], "cwd": os.getcwd(),
           "omp": os.environ["OMP_NUM_THREADS"], "tmp": tempfile.gettempdir(),
           "cmdline": open("/proc/self/cmdline", "rb").read().decode()}},
          open({str(out)!r}, "w"))
""",
    )
    work = tmp_path / "work"
    (work / "tmp").mkdir(parents=True)
    env = _env(warm, 3, str(work / "tmp"))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        assert warm.run([script], env) == 0
    finally:
        os.chdir(cwd)
    seen = json.loads(out.read_text())
    assert seen["argv"] == [script] and seen["file"] == script
    assert seen["name"] == "__main__"
    assert seen["path0"] == str(tmp_path) and seen["cwd"] == str(work)
    assert seen["omp"] == "3"
    # ps shows the job's command, not the server's
    assert seen["cmdline"].replace("\0", " ").split() == [sys.executable, script]
    assert seen["tmp"] == str(work / "tmp")
    assert (tmp_path / "seen.json.atexit").read_text() == "ran"


def test_exit_statuses_and_tracebacks_are_the_interpreters(warm, tmp_path, capfd):
    env = _env(warm)
    assert warm.run([_write(tmp_path, "ok.py", "x = 1\n")], env) == 0
    seven = _write(tmp_path, "seven.py", "import sys; sys.exit(7)\n")
    assert warm.run([seven, "arg"], env) == 7
    text_exit = _write(tmp_path, "text.py", "import sys; sys.exit('no such file')\n")
    assert warm.run([text_exit], env) == 1
    boom = _write(tmp_path, "boom.py", "def f():\n    raise ValueError('boom')\nf()\n")
    assert warm.run([boom], env) == 1
    interrupted = _write(tmp_path, "int.py", "raise KeyboardInterrupt\n")
    assert warm.run([interrupted], env) == -signal.SIGINT
    err = capfd.readouterr().err
    assert "no such file" in err
    assert 'boom.py", line 3, in <module>' in err and "ValueError: boom" in err
    assert "lorascope/workflow/warm" not in err  # the traceback is the job's own


def test_a_request_too_large_for_the_socket_runs_that_job_cold(warm, tmp_path):
    env = dict(_env(warm), LORASCOPE_TEST_HUGE="x" * (8 << 20))
    script = _write(tmp_path, "never.py", f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    assert warm.run([script], env) is None
    assert warm.alive and not (tmp_path / "ran").exists()
    assert warm.run([script], _env(warm)) == 0  # the next job runs warm


def test_jobs_run_side_by_side(warm, tmp_path):
    env = _env(warm)
    gate = tmp_path / "gate"
    waiter = _write(
        tmp_path,
        "wait.py",
        f"""
import os, time
while not os.path.exists({str(gate)!r}):
    time.sleep(0.02)
""",
    )
    opener = _write(tmp_path, "open.py", f"open({str(gate)!r}, 'w').close()\n")
    statuses = {}
    first = threading.Thread(target=lambda: statuses.update(w=warm.run([waiter], env)))
    first.start()
    assert warm.run([opener], env) == 0  # while the first still waits
    first.join(10)
    assert statuses == {"w": 0}


def test_a_server_that_is_gone_starts_nothing_and_says_so(warm, tmp_path, caplog):
    warm.process.kill()
    warm.process.wait()
    script = _write(tmp_path, "never.py", f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    with caplog.at_level(logging.WARNING, logger="test_warm"):
        assert warm.run([script], _env(warm)) is None
    assert not warm.alive and not (tmp_path / "ran").exists()
    assert "jobs start their own interpreters" in caplog.text


def _sleeping_job(tmp_path: Path) -> tuple[str, Path]:
    """A script that writes its pid to the returned file, then sleeps 60 s."""
    pid_file = tmp_path / "pid"
    script = _write(
        tmp_path,
        "sleepy.py",
        f"""
import os, time
open({str(pid_file)!r}, "w").write(str(os.getpid()))
time.sleep(60)
""",
    )
    return script, pid_file


def _started(pid_file: Path) -> int:
    """The job's pid, once it has written it (20 s at most)."""
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    return int(pid_file.read_text())


def _wait_gone(pid: int, deadline: float, what: str) -> None:
    """Wait until `pid` has exited (zombie or reaped), failing at `deadline`."""
    while _state(pid) not in "ZX":
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_job_whose_server_dies_fails_and_dies_too(warm, tmp_path):
    script, pid_file = _sleeping_job(tmp_path)
    errors = []

    def run():
        try:
            warm.run([script], _env(warm))
        except client.ServerDied as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    job = _started(pid_file)
    warm.process.kill()
    thread.join(10)
    assert errors and "exited while job pid" in errors[0]
    _wait_gone(job, time.monotonic() + 5, "the job outlived its server")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def test_a_preload_that_starts_a_thread_keeps_the_server_from_starting():
    """polars starts its thread pool at import: a fork could hang on it."""
    import socket

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("")
    listener.listen(1)
    proc = subprocess.run(
        [sys.executable, "-m", "lorascope.workflow.warm.server",
         str(listener.fileno()), "json", "polars"],
        pass_fds=[listener.fileno()], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    listener.close()
    assert proc.returncode == 3
    assert "importing polars started a thread" in proc.stderr


def test_the_default_preload_starts_no_thread():
    """What the server imports for real leaves it one thread (a fresh
    interpreter, as the server is, with one BLAS thread)."""
    env = dict(os.environ, **{k: "1" for k in server.THREAD_ENV})
    code = "from lorascope.workflow.warm.server import preload; preload(); print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# Page faults of touching a 64 MiB block a second time, the first freed.
REUSE_FAULTS = """
import resource
def faults_of_a_block(n=64 << 20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = b"\\x01" * n  # every page written
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_block()
print(faults_of_a_block())
"""
PAGES = (64 << 20) // 4096


def test_jobs_reuse_freed_memory_instead_of_faulting_it_in_again(warm, tmp_path):
    """tune_malloc (set in the server, inherited by its forks): a large block
    freed and asked for again comes back from the heap, not as new pages
    from the kernel, as glibc's defaults give it."""
    cold = subprocess.run([sys.executable, "-c", REUSE_FAULTS], capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    if int(cold.stdout) < PAGES // 2:
        pytest.skip("this C library reuses the block by default")
    out = tmp_path / "faults.txt"
    script = _write(tmp_path, "job.py", REUSE_FAULTS.replace(
        "print(faults_of_a_block())",
        f"open({str(out)!r}, 'w').write(str(faults_of_a_block()))",
    ))  # fmt: skip
    assert warm.run([script], _env(warm)) == 0
    assert int(out.read_text()) < PAGES // 10, (out.read_text(), cold.stdout)


def test_job_environment_and_what_must_match():
    env = jobs.job_environment(4, {"tmpdir": "/scratch/job"})
    assert {env[k] for k in server.THREAD_ENV} == {"4"}
    assert env["TMPDIR"] == env["TEMP"] == "/scratch/job"
    server_env = dict(os.environ)
    assert server.differing_keys(env, server_env) == []
    added = {**env, "LORASCOPE_TEST_ONLY": "1"}
    assert server.differing_keys(added, server_env) == ["LORASCOPE_TEST_ONLY"]
    without_home = {k: v for k, v in env.items() if k != "HOME"}
    moved_home = {**server_env, "HOME": "/x"}
    assert server.differing_keys(without_home, moved_home) == ["HOME"]


def _package(tmp_path: Path) -> Path:
    """A package `warmjob` whose __main__ records what `-m` gave it."""
    pkg = tmp_path / "pkgs" / "warmjob"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import json, os, sys\n"
        "json.dump({'argv': sys.argv, 'name': __name__, 'path0': sys.path[0],\n"
        "           'ppid': os.getppid()}, open(sys.argv[1], 'w'))\n"
        "sys.exit(int(sys.argv[2]))\n"
    )
    return pkg.parent


def test_a_module_runs_as_python_dash_m_would(warm, tmp_path, caplog):
    pkgs = _package(tmp_path)
    out = tmp_path / "m.json"
    env = _env(warm)
    paths = f"{pkgs}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env_with_path = dict(env, PYTHONPATH=paths)
    # the server's sys.path came from its own PYTHONPATH: another one runs cold
    with caplog.at_level(logging.INFO, logger="test_warm"):
        assert warm.run(["-m", "warmjob", str(out), "0"], env_with_path) is None
    assert not out.exists() and warm.alive
    assert "starts its own interpreter: its environment differs in PYTHONPATH" in (
        caplog.text
    )
    sys_path = list(sys.path)
    cwd = os.getcwd()
    os.chdir(pkgs)  # `python -m` finds the package in the working directory
    try:
        assert warm.run(["-m", "warmjob", str(out), "5"], env) == 5
    finally:
        os.chdir(cwd)
        sys.path[:] = sys_path
    seen = json.loads(out.read_text())
    assert seen["argv"] == [str(pkgs / "warmjob" / "__main__.py"), str(out), "5"]
    assert seen["name"] == "__main__" and seen["path0"] == str(pkgs)
    assert seen["ppid"] == warm.process.pid


def test_the_shell_rules_client_runs_in_the_server_or_by_itself(warm, tmp_path):
    pkgs = _package(tmp_path)
    out = tmp_path / "c.json"
    command = [sys.executable, "-m", "lorascope.workflow.warm.client",
               "-m", "warmjob", str(out), "3"]  # fmt: skip
    env = _env(warm)
    proc = subprocess.run(command, cwd=pkgs, env=env, timeout=60)
    assert proc.returncode == 3
    assert json.loads(out.read_text())["ppid"] == warm.process.pid
    # no server: the client runs the command itself, same result
    alone = {k: v for k, v in env.items() if k != client.ADDRESS_ENV}
    alone["PYTHONPATH"] = os.pathsep.join(sys.path[1:])
    proc = subprocess.run(command, cwd=pkgs, env=alone, timeout=60)
    assert proc.returncode == 3
    assert json.loads(out.read_text())["ppid"] != warm.process.pid


def test_a_job_whose_client_is_killed_is_stopped(warm, tmp_path):
    """A shell rule's client killed with its shell: the job, which here has
    no watch of its own, is stopped GRACE_S later."""
    script, pid_file = _sleeping_job(tmp_path)
    env = _env(warm)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorascope.workflow.warm.client", script], env=env
    )
    job = _started(pid_file)
    proc.kill()
    proc.wait()
    time.sleep(1)  # a job's own watch gets GRACE_S to stop with its children
    assert _state(job) not in "ZX", "stopped before its own watch could"
    deadline = time.monotonic() + server.GRACE_S + 5
    _wait_gone(job, deadline, "the job outlived its client")


class _Script:
    conda_env = container_img = env_modules = bench_record = shadow_dir = None
    rulename = "train_sae"
    resources = {"gpu": 0, "tmpdir": "/tmp"}


def test_jobs_another_interpreter_or_a_measurement_needs_run_cold():
    assert jobs._cold_reason(_Script(), edit=False) is None
    assert jobs._cold_reason(_Script(), edit=True) == "edit"
    for attr in ("conda_env", "container_img", "env_modules", "bench_record",
                 "shadow_dir"):  # fmt: skip
        job = _Script()
        setattr(job, attr, "set")
        assert jobs._cold_reason(job, edit=False) == attr
    job = _Script()
    job.resources = {"gpu": 1}
    assert jobs._cold_reason(job, edit=False) == "gpu"
    job = _Script()
    job.rulename = "hub_fetch"  # imports huggingface_hub after going online
    assert jobs._cold_reason(job, edit=False) == "rule"


def test_shell_rules_go_through_the_client_only_on_cpu_with_this_interpreter(
    warm, monkeypatch
):
    monkeypatch.setattr(jobs, "_warm", warm)
    warm_python = jobs.python_command(sys.executable)
    assert warm_python.endswith(" -m lorascope.workflow.warm.client")
    assert jobs.python_command(sys.executable, gpus=1) == sys.executable
    assert jobs.python_command("/other/python") == "/other/python"
    warm.alive = False
    assert jobs.python_command(sys.executable) == sys.executable


def test_a_server_whose_snakemake_is_killed_exits_once_its_jobs_have(tmp_path):
    """snakemake SIGKILLed mid-job: nothing of the warm interpreter stays."""
    pids = tmp_path / "pids.json"
    script = _write(tmp_path, "long.py", "import time\ntime.sleep(60)\n")
    snakemake_like = f"""
import json, logging, os, threading, time
from lorascope.workflow.warm import jobs
warm = jobs._Warm(logging.getLogger(), modules=("json",))
env = dict(os.environ, **{{k: "1" for k in jobs.THREAD_ENV}})
threading.Thread(target=warm.run, args=([{script!r}], env), daemon=True).start()
time.sleep(0.5)
json.dump([warm.process.pid], open({str(pids)!r}, "w"))
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", snakemake_like])
    deadline = time.monotonic() + 30
    while not pids.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    (server_pid,) = json.loads(pids.read_text())
    job = _children(server_pid)
    assert len(job) == 1
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + server.GRACE_S + 10
    for pid in (server_pid, *job):
        _wait_gone(pid, deadline, "the warm interpreter outlived its run")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


class _Dag:
    def __init__(self, n: int):
        self.n = n

    def needrun_jobs(self):
        return iter(range(self.n))


class _Workflow:
    local_exec = is_main_process = True
    dryrun = touch = False
    dag = _Dag(jobs.MIN_JOBS)


@pytest.mark.parametrize(
    "change",
    [
        {"few": True},
        {"local_exec": False},
        {"is_main_process": False},
        {"dryrun": True},
        {"touch": True},
        {"off": True},
    ],  # fmt: skip
)
def test_only_a_local_run_that_executes_jobs_starts_it(change, monkeypatch):
    """Fewer than MIN_JOBS jobs to run, a cluster run (its jobs run
    elsewhere), a SLURM job step, a dry run, --touch, or
    LORASCOPE_WARM_JOBS=0: no server, shell rules run python."""
    workflow = _Workflow()
    if change.get("few"):
        workflow.dag = _Dag(jobs.MIN_JOBS - 1)
    for key, value in change.items():
        setattr(workflow, key, value)
    if change.get("off"):
        monkeypatch.setenv(jobs.WARM_ENV, "0")
    monkeypatch.setattr(jobs, "_warm", None)
    assert jobs.start(workflow, LOG) is False
    assert jobs._warm is None
    assert jobs.python_command(sys.executable) == sys.executable


@pytest.mark.parametrize("wanted, n_jobs", [("1", 1), ("", jobs.MIN_JOBS)])
def test_enough_jobs_or_asked_for_it_starts_it(wanted, n_jobs, monkeypatch):
    from snakemake.script import PythonScript

    # restored after the test: start() wraps Snakemake's script runner
    monkeypatch.setattr(PythonScript, "execute_script", PythonScript.execute_script)
    monkeypatch.setattr(jobs, "_warm", None)
    monkeypatch.delenv(client.ADDRESS_ENV, raising=False)
    monkeypatch.setenv(jobs.WARM_ENV, wanted)
    workflow = _Workflow()
    workflow.dag = _Dag(n_jobs)
    assert jobs.start(workflow, LOG, modules=("json",)) is True
    try:
        assert PythonScript.execute_script.warm
        assert jobs.python_command(sys.executable).endswith("warm.client")
    finally:
        jobs._warm.stop()
