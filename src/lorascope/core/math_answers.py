"""Math answers checked with math-verify, each under a wall-clock limit (rules
`eval_grade` and `steering_sweep`, through `lorascope.core.grading`).

math-verify can run forever: `\\boxed{10^{10^{10}}}` makes sympy build a
ten-billion-digit integer. Its own timeouts use SIGALRM, which works only in
a process's main thread and collides with any other alarm (pytest-timeout's),
so they stay off. Instead `MathChecker` runs the checks in a child process
(`python -m lorascope.core.math_answers`, one JSON line per answer, no
pickling and no re-import of a `__main__` without a guard) and kills it when
an answer takes longer than the limit; that answer grades wrong and the next
one gets a fresh child. The child caps its own memory too. A process that
has math-verify imported already (a job of the warm interpreter,
`lorascope.workflow.warm`, which preloads it) forks the child instead: the
same loop, without the 0.3 CPU s of start-up and imports a fresh one pays.

`check_math` is the check itself: the gold answer is wrapped in `\\boxed{}`
and parsed first; the prediction is parsed with boxed answers taking
priority, then `$...$` and bare expressions. A section without boxed or
`$` math is read from its bare tail, whole, as if in `$...$`: the whole
section when it is one bare expression (`3\\sqrt{13}`, `(-2, 1)`, a
`\\begin{pmatrix}` vector), else the expression that ends its last
sentence (`The point is (1, 2).`), a trailing unit dropped. Read bare,
math-verify keeps only a fragment (`3` of `3\\sqrt{13}`, the last entry
of a vector). `\\$` (a dollar sign) and `\\!` (a thin space in `32,\\!348`)
are dropped from both sides first.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["MathChecker", "check_math", "normalise_text"]

log = logging.getLogger(__name__)

_SRC = str(Path(__file__).resolve().parents[2])
_MEMORY_CAP = 4 << 30  # bytes of address space for the child
_TIMEOUT = "<timeout>"  # what _next returns when no line came in time


def normalise_text(text: str) -> str:
    """Lower-case words of an answer, LaTeX text wrappers and `$` removed."""
    text = re.sub(r"\\(?:text|textbf|mathrm|boxed)\s*{([^{}]*)}", r"\1", text)
    text = text.replace("$", "").replace("\\", "")
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(text.split())


_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_ENVIRONMENT = re.compile(r"\\(?:begin|end)\s*{\w+\*?}")
_WORD = re.compile(r"[A-Za-z]{2,}")
# `\$18.90` is a dollar sign, never a math delimiter, and `32,\!348` a
# thousands separator; read as written, math-verify finds no number in
# either (it takes `\$` for the start of inline math).
_TYPESETTING = re.compile(r"\\\$\s*|\\!")
# The last clause of a prose answer: what follows its last "is", "are",
# "=" or ":" (`The function is odd.`).
_LAST_CLAUSE = re.compile(r"(?:\bis|\bare|=|:)\s+([^=:]*?)\s*\.?\s*$", re.IGNORECASE)
_CONJUNCTION = re.compile(r"\b(?:and|or)\b")  # `1, 2, and 3`: a list, not prose
_TOKEN_START = re.compile(r"(?:^|(?<=\s))\S")
# A unit after a value (`3\sqrt{13} square units`, `(3, -2) cm`,
# `\frac{1}{2} \text{ m}^2`): dropped before looking for the bare
# expression, as math-verify drops units after plain numbers.
_TRAILING_UNIT = re.compile(
    r"(?<=[\d})\]])\s*(?:\\(?:text|mbox|mathrm)\s*{[^{}]*}"
    r"|\s(?:square\s+|cubic\s+|sq\s+)?[A-Za-z]{2,}(?:/[A-Za-z]+)?)"
    r"(?:\^\{?\d\}?)?$"
)


def _bare_expression(text: str) -> bool:
    """No math delimiters and, LaTeX commands and environment names aside, no
    word of prose (`\\begin{pmatrix}` is not the word "pmatrix")."""
    if _DELIMITED.search(text):
        return False
    text = _CONJUNCTION.sub(" ", _COMMAND.sub(" ", _ENVIRONMENT.sub(" ", text)))
    return not _WORD.search(text)


def _bare_tail(body: str) -> str | None:
    """The longest run of whole tokens ending the section that is one bare
    expression: all of a bare section, or what follows the last word of a
    sentence (`(1, 2)` of `The point is (1, 2).`). None when the section
    ends in a word. Grown from the end, so a long section costs its tail."""
    text = _TRAILING_UNIT.sub("", body.strip().removesuffix(".").rstrip())
    tail = None
    for start in reversed([m.start() for m in _TOKEN_START.finditer(text)]):
        if not _bare_expression(text[start:]):
            break
        tail = text[start:]
    return tail


def _last_clause(body: str) -> str | None:
    match = _LAST_CLAUSE.search(body)
    return match.group(1) if match and match.group(1) else None


def _text_answer(gold: str, body: str) -> tuple[str, bool] | None:
    """A word answer compared as normalised text: the whole section, or the
    last clause of a sentence (`The function is odd.` for `\\text{odd}`)."""
    whole = normalise_text(body)
    if not whole:
        return None
    want = normalise_text(gold)
    clause = _last_clause(body)
    for text in (whole, normalise_text(clause or "")):
        if text and text == want:
            return text, True
    return whole, False


def check_math(gold: str, body: str) -> tuple[str | None, bool]:
    """(extracted prediction or None, correct) for a math answer section body.

    Unbounded: call it through `MathChecker`. Read in this order, first hit
    wins: boxed answers and `$...$` math (math-verify's own extraction); a
    section that is one bare expression, read whole (`$...$` around it); the
    bare expression that ends a sentence (`The point is (1, 2).`); then
    math-verify on the section as written. Word golds (`\\text{Evelyn}`)
    are also compared as normalised text, because math-verify does not
    extract bare words from a prediction.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold, body = _TYPESETTING.sub("", gold), _TYPESETTING.sub("", body)
    gold_parsed = parse(
        "\\boxed{" + gold + "}",
        extraction_config=[LatexExtractionConfig()],
        parsing_timeout=None,
    )
    if not gold_parsed:
        raise ValueError(f"gold answer {gold!r} is not parseable by math-verify")
    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    pred = []
    # Only in a section without boxed or `$` math: those are what the
    # answer is, and a bare tail after them is a check or an aside.
    tail = None if _DELIMITED.search(body) else _bare_tail(body)
    if tail:
        pred = parse(f"${tail}$", extraction_config=configs, parsing_timeout=None)
    if not pred:
        pred = parse(body, extraction_config=configs, parsing_timeout=None)
    ok = bool(pred) and bool(verify(gold_parsed, pred, timeout_seconds=None))
    if not ok and "\\text" in gold:
        text = _text_answer(gold, body)
        if text is not None and (text[1] or not pred):
            return text
    if pred:
        return str(pred[-1]), ok
    return None, False


class MathChecker:
    """`check_math` in a child process, each answer under `timeout_s` seconds.

    `check(gold, body)` returns (extracted, correct, timed_out). A gold
    answer math-verify cannot parse raises ValueError here as it would
    in-process. Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        timeout_s: float,
        startup_timeout_s: float = 120.0,
        fork: bool | None = None,
    ):
        if timeout_s <= 0:
            raise ValueError(f"grade timeout must be > 0 seconds, got {timeout_s}")
        self.timeout_s, self.startup_timeout_s = timeout_s, startup_timeout_s
        # None: fork where math-verify is imported already (module docstring)
        if fork is None:
            fork = "math_verify" in sys.modules and sys.platform.startswith("linux")
        self.fork = fork
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def _start(self) -> None:
        if self.fork:
            self._proc = _ForkedChild()
        else:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (_SRC, env.get("PYTHONPATH")) if p
            )
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "lorascope.core.math_answers"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
                env=env,
            )
        self._lines = queue.Queue()
        threading.Thread(
            target=self._read, args=(self._proc.stdout, self._lines), daemon=True
        ).start()
        ready = self._next(self.startup_timeout_s)
        if ready != "ready":
            self.close()
            raise RuntimeError(
                f"the math-verify child did not start within "
                f"{self.startup_timeout_s:.0f} s (got {ready!r})"
            )

    @staticmethod
    def _read(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)  # the child exited

    def _next(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            return _TIMEOUT

    def check(self, gold: str, body: str) -> tuple[str | None, bool, bool]:
        if self._proc is None:
            self._start()
        assert self._proc is not None and self._proc.stdin is not None
        start = time.monotonic()
        self._proc.stdin.write(json.dumps([gold, body]) + "\n")
        self._proc.stdin.flush()
        line = self._next(self.timeout_s)
        if line == _TIMEOUT or line is None:
            # Killed (or crashed): this answer is wrong, and the next one
            # gets a fresh child.
            why = "timed out" if line == _TIMEOUT else "crashed"
            log.warning(
                "math-verify %s after %.1f s on %r (gold %r): graded wrong",
                why,
                time.monotonic() - start,
                body[:80],
                gold,
            )
            self.close()
            return None, False, True
        reply = json.loads(line)
        if "error" in reply:
            raise ValueError(reply["error"])
        return reply["extracted"], reply["correct"], False

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
            self._proc = None

    def __enter__(self) -> MathChecker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _ForkedChild:
    """The checking child as a fork of this process (the part of
    `subprocess.Popen` that MathChecker uses). The fork keeps only its two
    pipe ends open, default signal handlers, and `_MEMORY_CAP` bytes of
    address space beyond what it inherits."""

    def __init__(self):
        child_in, self_out = os.pipe()
        self_in, child_out = os.pipe()
        cap = _address_space() + _MEMORY_CAP
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # never returns: os._exit skips the parent's atexit work
            status = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                os.dup2(child_in, 0)
                os.dup2(child_out, 1)
                for fd in _open_fds():
                    if fd > 2:
                        try:
                            os.close(fd)
                        except OSError:  # the listing's own, already closed
                            pass
                sys.stdin = open(0, encoding="utf-8", closefd=False)
                sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
                _serve(cap)
                status = 0
            finally:
                os._exit(status)
        os.close(child_in)
        os.close(child_out)
        self.pid = pid
        self.stdin = open(self_out, "w", encoding="utf-8", buffering=1)
        self.stdout = open(self_in, encoding="utf-8")

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self) -> None:
        os.waitpid(self.pid, 0)


def _address_space() -> int:
    """Bytes of virtual memory this process maps now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _open_fds() -> list[int]:
    return [int(fd) for fd in os.listdir("/proc/self/fd")]


def _serve(memory_cap: int = _MEMORY_CAP) -> None:
    """The child: one JSON `[gold, body]` per line in, one reply per line out."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))
    # math-verify warns once that its own timeouts are off; that is intended.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401 (imported before saying ready)

    print("ready", flush=True)
    for line in sys.stdin:
        gold, body = json.loads(line)
        try:
            extracted, correct = check_math(gold, body)
            reply = {"extracted": extracted, "correct": correct}
        except ValueError as e:
            reply = {"error": str(e)}
        except MemoryError:
            reply = {"extracted": None, "correct": False}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    _serve()
