"""Math answers checked with math-verify, each under a wall-clock limit (rules
`eval_grade` and `steering_sweep`, through `lorascope.core.grading`).

math-verify can run forever: `\\boxed{10^{10^{10}}}` makes sympy build a
ten-billion-digit integer. Its own timeouts use SIGALRM, which works only in
a process's main thread and collides with any other alarm (pytest-timeout's),
so they stay off. Instead `MathChecker` runs the checks in a child process
(`python -m lorascope.core.math_answers`, one JSON line per answer, no
pickling and no re-import of a `__main__` without a guard) and kills it when
an answer takes longer than the limit; that answer grades wrong and the next
one gets a fresh child. The child caps its own memory too.

`check_math` is the check itself: the gold answer is wrapped in `\\boxed{}`
and parsed first; the prediction is parsed with boxed answers taking
priority, then `$...$` and bare expressions. A section that is one bare
LaTeX expression (no `$`, no `\\boxed`, no words: `3\\sqrt{13}`,
`\\frac{14}{3}`, `(-2, 1)`, `6 - 5i`) is read whole, as if in `$...$`:
read bare, math-verify keeps only a fragment (`3` of `3\\sqrt{13}`).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
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


_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")


def _bare_expression(body: str) -> bool:
    """No math delimiters and, LaTeX commands aside, no word of prose."""
    return not _DELIMITED.search(body) and not _WORD.search(_COMMAND.sub(" ", body))


def check_math(gold: str, body: str) -> tuple[str | None, bool]:
    """(extracted prediction or None, correct) for a math answer section body.

    Unbounded: call it through `MathChecker`. Word golds (`\\text{Evelyn}`)
    are also compared as normalised text, because math-verify does not
    extract bare words from a prediction.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold_parsed = parse(
        "\\boxed{" + gold + "}",
        extraction_config=[LatexExtractionConfig()],
        parsing_timeout=None,
    )
    if not gold_parsed:
        raise ValueError(f"gold answer {gold!r} is not parseable by math-verify")
    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    pred = []
    if _bare_expression(body):
        pred = parse(f"${body}$", extraction_config=configs, parsing_timeout=None)
    if not pred:
        pred = parse(body, extraction_config=configs, parsing_timeout=None)
    if pred:
        ok = verify(gold_parsed, pred, timeout_seconds=None)
        return str(pred[-1]), bool(ok)
    if "\\text" in gold:
        pred_text = normalise_text(body)
        if pred_text:
            return pred_text, pred_text == normalise_text(gold)
    return None, False


class MathChecker:
    """`check_math` in a child process, each answer under `timeout_s` seconds.

    `check(gold, body)` returns (extracted, correct, timed_out). A gold
    answer math-verify cannot parse raises ValueError here as it would
    in-process. Use as a context manager, or call `close()`.
    """

    def __init__(self, timeout_s: float, startup_timeout_s: float = 120.0):
        if timeout_s <= 0:
            raise ValueError(f"grade timeout must be > 0 seconds, got {timeout_s}")
        self.timeout_s, self.startup_timeout_s = timeout_s, startup_timeout_s
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def _start(self) -> None:
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


def _serve() -> None:
    """The child: one JSON `[gold, body]` per line in, one reply per line out."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP))
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
