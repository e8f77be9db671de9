"""The warm interpreter's server: imports torch, transformers and peft once
and forks a child per job (`lorascope.workflow.warm.child` makes the child
the job). One server per local run, started by `warm.jobs`.

Lifetime: jobs watch snakemake as before (`lorascope.core.processes`: a job
whose snakemake is gone stops with its children, and logs why). A job whose
client is gone (snakemake killed, or a shell rule's shell) and that still
runs GRACE_S later gets SIGTERM. The server stops taking jobs once its
snakemake is gone (checked every second) and exits when its jobs have; a
child dies with the server (PR_SET_PDEATHSIG, set in the child), should the
server die first. SIGINT is ignored here (Ctrl-C stops jobs through
`lorascope.workflow.interrupts`); SIGTERM stops the server once its running
jobs have ended.

Protocol (one SOCK_SEQPACKET connection per job, JSON messages): the client
sends {"argv", "cwd", "env"} (`python ARGV`: a script path or `-m NAME`,
then arguments) with its stdin, stdout and stderr. The server answers
{"cold": [keys]} and runs nothing when the environment differs from its own
in more than the per-job variables, else {"pid"} once the child runs, then
{"status"} (a `subprocess` return code: negative for a signal) when it ends.
A connection closed before {"pid"} means the job never started.

    python -m lorascope.workflow.warm.server LISTEN_FD [MODULE ...]

Only the standard library is imported at module level.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time

from lorascope.workflow.warm.child import run_job
from lorascope.workflow.warm.client import MAX_MESSAGE

__all__ = [
    "MALLOC_OPTIONS",
    "PER_JOB_ENV",
    "PRELOAD",
    "THREAD_ENV",
    "TMP_ENV",
    "ThreadStarted",
    "differing_keys",
    "preload",
    "serve",
    "tune_malloc",
]

# Imported once for every job: what most jobs import, none starting a thread
# (polars, pyarrow, datasets and sae_lens do). `transformers` is lazy: the
# submodules jobs reach are named.
PRELOAD = (
    "numpy",
    "torch",
    "safetensors.torch",
    "transformers",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.qwen2.modeling_qwen2",
    "peft",
    "matplotlib",
    "matplotlib.pyplot",
    "tqdm",
    "yaml",
    "snakemake.script",
    "math_verify",  # graders fork their checking child (lorascope.core.math_answers)
)
# Environment variables Snakemake sets per job (shell(): thread counts from
# the job's threads, TMPDIR and friends from its tmpdir resource).
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
TMP_ENV = ("TMPDIR", "TMP", "TEMPDIR", "TEMP")
# ... and what the shell of a shell rule sets (its client inherits them),
# which no library reads at import.
SHELL_ENV = ("_", "SHLVL", "PWD", "OLDPWD")
PER_JOB_ENV = THREAD_ENV + TMP_ENV + SHELL_ENV
# How long a job whose client is gone may run on before SIGTERM.
GRACE_S = 5.0
# glibc's malloc gives a block of 128 KiB or more its own mmap and returns it
# to the kernel when freed, until its threshold has adapted to the largest
# block freed so far. Tensors that grow step by step (a generation's KV
# cache, a training step's activations at each chunk's length) outgrow it
# every time: a page fault per 4 KiB touched, 2-6 s of system time in a
# toy job (bench/bench_malloc.py). Blocks up to the mmap threshold stay in
# the heap for reuse instead (and up to the trim threshold of free memory at
# its top), in the server and in every job forked from it.
MALLOC_OPTIONS = {  # name: (mallopt's code, value)
    "M_TRIM_THRESHOLD": (-1, 512 << 20),
    "M_MMAP_THRESHOLD": (-3, 256 << 20),
}


class ThreadStarted(RuntimeError):
    """A preloaded module started a thread: forks of this process could hang."""


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # no /proc: trust threading's count of Python threads
        return threading.active_count()


def preload(modules: tuple[str, ...] | list[str] = PRELOAD) -> None:
    """Import `modules` in order; raise ThreadStarted naming the first one
    after which this process runs more than one thread."""
    for name in modules:
        importlib.import_module(name)
        if _threads() > 1:
            raise ThreadStarted(
                f"importing {name} started a thread; a forked job could hang on "
                "it: leave it out of lorascope.workflow.warm.server.PRELOAD"
            )


def tune_malloc() -> bool:
    """Set MALLOC_OPTIONS (glibc's mallopt) for this process and its forks;
    False where the C library has no mallopt (its defaults stay)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(code, value) == 1 for code, value in MALLOC_OPTIONS.values())


def _title_ready() -> None:
    """setproctitle finds the memory it rewrites (argv and environ) when it
    first runs: here, while environ is intact (a child replaces it)."""
    try:
        import setproctitle
    except ImportError:  # a dependency; without it ps shows this command line
        return
    setproctitle.setproctitle(setproctitle.getproctitle())


def differing_keys(job_env: dict[str, str], server_env: dict[str, str]) -> list[str]:
    """Variables, besides the per-job ones, whose value differs between a
    job's environment and the server's (a library may have read them at
    import)."""
    keys = (set(job_env) | set(server_env)) - set(PER_JOB_ENV)
    return sorted(k for k in keys if job_env.get(k) != server_env.get(k))


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.send(json.dumps(message).encode())
    except OSError:  # the client is gone: nobody waits for this job
        pass


def _stop_job(pid: int) -> None:
    """SIGTERM a job whose client is gone, with its group if it leads one
    (`lorascope.core.processes` makes each job a group leader)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass


class _Server:
    def __init__(self, listener: socket.socket, parent: int, env: dict[str, str]):
        self.listener = listener
        self.parent = parent
        self.env = env  # the server's own, as the client started it
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, ("accept",))
        self.running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> job
        self.stopping = False
        self.wake: tuple[int, ...] = ()
        self.doomed: dict[int, float] = {}  # pidfd -> when to stop it

    def _request(self, conn: socket.socket) -> tuple[dict, list[int]] | None:
        try:
            data, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 3)
            request = json.loads(data)
            if len(fds) != 3 or not {"argv", "cwd", "env"} <= set(request):
                for fd in fds:
                    os.close(fd)
                raise ValueError(f"bad request ({len(fds)} fds): {data[:200]!r}")
        except (OSError, ValueError) as exc:
            print(f"warm interpreter: {exc}", file=sys.stderr)
            return None
        return request, fds

    def start(self, conn: socket.socket) -> None:
        got = None if self.stopping else self._request(conn)
        if got is None:
            conn.close()  # never started: the client runs it itself
            return
        request, fds = got
        differ = differing_keys(request["env"], self.env)
        if differ:
            for fd in fds:
                os.close(fd)
            _send(conn, {"cold": differ})
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        server = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                self.selector.close()
                self.listener.close()
                signal.set_wakeup_fd(-1)
                for fd in self.wake:
                    os.close(fd)
                for pidfd, (_, other) in self.running.items():
                    other.close()
                    os.close(pidfd)
                conn.close()
                run_job(request, fds, server)
            finally:
                os._exit(1)  # run_job exits itself; this is a failure in it
        for fd in fds:
            os.close(fd)
        _send(conn, {"pid": pid})
        pidfd = os.pidfd_open(pid)
        self.running[pidfd] = (pid, conn)
        self.selector.register(pidfd, selectors.EVENT_READ, ("exit", pidfd))
        self.selector.register(conn, selectors.EVENT_READ, ("client", pidfd))

    def reap(self, pidfd: int) -> None:
        pid, conn = self.running.pop(pidfd)
        self.selector.unregister(pidfd)
        self.selector.unregister(conn)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        _send(conn, {"status": os.waitstatus_to_exitcode(status)})
        conn.close()

    def client_gone(self, pidfd: int) -> None:
        """A client sends nothing after its request: readable means it is
        gone (snakemake killed, or a shell rule's shell). The job's own watch
        (lorascope.core.processes) stops it, with its children, within a
        second or two of snakemake's death; whatever still runs after
        GRACE_S is stopped here: a job must not run on unrecorded."""
        pid, conn = self.running[pidfd]
        self.selector.unregister(conn)
        self.doomed[pidfd] = time.monotonic() + GRACE_S

    def stop_overdue(self) -> None:
        now = time.monotonic()
        for pidfd, deadline in list(self.doomed.items()):
            if pidfd not in self.running:
                del self.doomed[pidfd]
            elif now > deadline:
                _stop_job(self.running[pidfd][0])
                del self.doomed[pidfd]

    def loop(self) -> None:
        while not (self.stopping and not self.running):
            for key, _ in self.selector.select(timeout=1.0):
                kind = key.data[0]
                if kind == "wake":
                    os.read(key.fd, 512)
                elif kind == "accept":
                    self.start(self.listener.accept()[0])
                elif kind == "exit":
                    self.reap(key.data[1])
                elif key.data[1] in self.running:
                    self.client_gone(key.data[1])
            if os.getppid() != self.parent and not self.stopping:
                # snakemake is gone: no new jobs; the running ones end by
                # their own watch, or by stop_overdue (every client is gone)
                self.stopping = True
            self.stop_overdue()


def serve(listener: socket.socket, modules=PRELOAD) -> None:
    """Preload `modules`, then fork a child per connection until SIGTERM (once
    no job runs) or until the parent process is gone."""
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = _Server(listener, parent, dict(os.environ))

    def stop(signum, frame):
        server.stopping = True

    signal.signal(signal.SIGTERM, stop)
    # the handler runs once select() returns: the wakeup fd makes it return
    server.wake = os.pipe()
    os.set_blocking(server.wake[1], False)
    signal.set_wakeup_fd(server.wake[1])
    server.selector.register(server.wake[0], selectors.EVENT_READ, ("wake",))
    tune_malloc()
    preload(modules)
    _title_ready()
    # What the preload made stays out of the garbage collector's passes: a
    # collection in a child would touch (and so copy) every inherited object.
    gc.freeze()
    server.loop()


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[1].isdigit():
        print(__doc__.rsplit("\n\n", 2)[-2], file=sys.stderr)
        return 2
    listener = socket.socket(fileno=int(argv[1]))
    modules = tuple(argv[2:]) or PRELOAD
    try:
        serve(listener, modules)
    except Exception as exc:  # a preload failed: the client runs jobs itself
        print(f"warm interpreter not started: {type(exc).__name__}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
