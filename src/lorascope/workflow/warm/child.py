"""What a fork of the warm interpreter does to become a job: what a fresh
`python ARGV` would have, nothing of the server's.

- stdio, working directory and environment: the client's (dup2, chdir,
  os.environ replaced); default SIGINT/SIGTERM handlers.
- Import-time settings: torch's thread count is set again from
  OMP_NUM_THREADS, which a fresh interpreter reads when torch starts (numpy's
  BLAS stays at the server's one thread: its pool would be a thread in the
  server). Other variables match the server's (`server.differing_keys`).
- Randomness: numpy's global generator is reseeded from the OS, as a fresh
  interpreter seeds it (Python's `random` reseeds itself at fork; torch's
  default generator starts from the same fixed seed either way).
- `sys.argv`, `sys.path[0]` and `__main__` as `python script` or
  `python -m NAME` sets them; an uncaught exception's traceback holds the
  job's frames only; at the end non-daemon threads are joined and atexit
  handlers run, then the process exits with the interpreter's status.
- Its command line (ps, /proc/PID/cmdline) is the job's `python ARGV`.
- It dies with the server (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import builtins
import ctypes
import os
import signal
import sys
import tempfile
import threading
import traceback
import types
from importlib.machinery import SourceFileLoader

__all__ = ["run_job"]

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when `parent` (the server) exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the job's own watch remains
        pass
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(1)


def _exit_status(exc: SystemExit) -> int:
    """The status `python script.py` exits with on SystemExit(exc.code)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _run_as_main(argv: list[str]) -> int:
    """Run `python ARGV` as a fresh interpreter would: a script as module
    __main__ (which stays in sys.modules for atexit handlers), or `-m NAME`
    through runpy; a traceback on stderr and status 1 for an uncaught
    exception."""
    import runpy

    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    try:
        if argv[0] == "-m":
            sys.argv = ["-m", *argv[2:]]  # runpy puts the module's path first
            sys.path[0] = os.getcwd()
            # what `python -m` itself calls: the module runs as this __main__
            # and sys.argv[0] stays its path (atexit handlers see it too)
            runpy._run_module_as_main(argv[1], alter_argv=True)
            return 0
        script = os.path.abspath(argv[0])
        sys.argv = [script, *argv[1:]]
        sys.path[0] = os.path.dirname(script)
        main.__file__ = script
        main.__loader__ = SourceFileLoader("__main__", script)
        main.__spec__ = None
        with open(script, "rb") as fh:
            code = compile(fh.read(), script, "exec")
        exec(code, main.__dict__)
        return 0
    except SystemExit as exc:
        return _exit_status(exc)
    except KeyboardInterrupt as exc:
        traceback.print_exception(exc.with_traceback(exc.__traceback__.tb_next))
        return -signal.SIGINT  # the interpreter's way: die by the signal
    except BaseException:
        kind, exc, tb = sys.exc_info()
        exc.with_traceback(tb.tb_next)  # the job's frames only
        sys.excepthook(kind, exc, tb.tb_next)
        return 1


def _finish(status: int) -> None:
    """Interpreter shutdown without unwinding into the server's frames:
    non-daemon threads joined, atexit handlers run, streams flushed."""
    try:
        threading._shutdown()  # what Py_Finalize does first
    except Exception:
        traceback.print_exc()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


def _set_threads(env: dict[str, str]) -> None:
    n = env.get("OMP_NUM_THREADS", "")
    torch = sys.modules.get("torch")
    if torch is not None and n.isdigit() and int(n) > 0:
        torch.set_num_threads(int(n))


def _fresh_randomness() -> None:
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _set_title(argv: list[str]) -> None:
    """The command line `ps`, `top` and /proc/PID/cmdline show: the job's
    `python ARGV`, not the server's (a fork keeps its parent's)."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # a dependency; without it ps shows the server's line
        return
    setproctitle(" ".join([sys.executable, *argv]))


def run_job(request: dict, fds: list[int], server: int) -> None:
    """In the forked child: become the job, run `python ARGV`, exit."""
    _die_with_parent(server)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # re-read TMPDIR
    _set_threads(request["env"])
    _fresh_randomness()
    _set_title(request["argv"])
    _finish(_run_as_main(request["argv"]))
