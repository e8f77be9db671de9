"""The client side of the warm interpreter: `submit` (used by `warm.jobs`
for script jobs) and a command for shell rules:

    python -m lorascope.workflow.warm.client -m lorascope.train --variant ...

runs `python -m lorascope.train --variant ...` in a fork of the run's server
(its address in $LORASCOPE_WARM_ADDRESS), or, where the server cannot take
it (none, gone, another environment), execs that command itself. SIGTERM,
SIGINT and SIGHUP sent to it are passed on to the job; it exits with the
job's status. Standard library only: it starts in tens of milliseconds.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys

__all__ = ["ADDRESS_ENV", "ServerDied", "main", "submit"]

ADDRESS_ENV = "LORASCOPE_WARM_ADDRESS"
MAX_MESSAGE = 1 << 20


class ServerDied(RuntimeError):
    """The server exited while a job it had started ran (the job died too)."""


def submit(address: str, argv: list[str], env: dict[str, str], on_start=None):
    """Run `python ARGV` with `env`, this process's working directory and
    stdio in a fork of the server at `address` (the name of its abstract
    Unix socket).

    Returns ("status", code); ("cold", why) when the server cannot take this
    job (its environment differs from the server's, or its request is too
    large: nothing ran); or ("gone", why) when the server is not there
    (nothing ran). Raises ServerDied when the
    server exited while the job ran. `on_start(pid)` is called once the job
    runs."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect("\0" + address)
        request = {"argv": argv, "cwd": os.getcwd(), "env": env}
        socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
        reply = conn.recv(MAX_MESSAGE)
    except OSError as exc:
        conn.close()
        if exc.errno == errno.EMSGSIZE:  # this job's request, not the server
            return "cold", "its request is larger than the socket takes"
        return "gone", f"unreachable ({exc.strerror or exc})"
    if not reply:
        conn.close()
        return "gone", "exited before starting a job"
    message = json.loads(reply)
    if "cold" in message:
        conn.close()
        return "cold", f"its environment differs in {', '.join(message['cold'])}"
    pid = message["pid"]
    try:
        if on_start is not None:
            on_start(pid)
        ended = conn.recv(MAX_MESSAGE)
    except OSError:
        ended = b""
    finally:
        conn.close()
    if not ended:
        raise ServerDied(f"the warm interpreter exited while job pid {pid} ran")
    return "status", json.loads(ended)["status"]


def main(argv: list[str]) -> int:
    """`python ARGV` in the warm interpreter when it can, else itself."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    address = os.environ.get(ADDRESS_ENV)
    job: list[int] = []

    def forward(signum, frame):
        if job:
            os.kill(job[0], signum)
        else:  # not started yet: the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        outcome = (
            ("gone", "no address")
            if not address
            else submit(address, argv, dict(os.environ), on_start=job.append)
        )
    except ServerDied as exc:
        print(f"{exc}: the job was stopped with it", file=sys.stderr)
        return 1
    if outcome[0] == "status":
        code = outcome[1]
        if code < 0:  # died by a signal: so do we, as a shell expects
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        return code
    if outcome[0] == "cold":  # said in the job's log: it pays the imports
        print(f"warm interpreter: {outcome[1]}; this job starts its own interpreter",
              file=sys.stderr)  # fmt: skip
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.execv(sys.executable, [sys.executable, *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
