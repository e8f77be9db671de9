"""Where the suite's wall time goes: a pytest plugin that appends each test's
start and end (time, xdist worker) to $TIMELINE_FILE, and a report of it.

    TIMELINE_FILE=/tmp/t.jsonl PYTHONPATH=tests .venv/bin/python -m pytest \\
        -n 2 --dist loadfile --no-loadscope-reorder -p timeline
    python tests/support/timeline.py /tmp/t.jsonl  # per worker: file, start, end, s

The per-file seconds feed conftest.HEAVY_FILES (the order files start in).
"""

import json
import os
import sys
import time
from collections import defaultdict


def _record(event: str, nodeid: str) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    path = os.environ.get("TIMELINE_FILE")
    if path and worker:  # the xdist controller relays the same events: skip
        with open(path, "a") as f:
            line = {"t": time.time(), "ev": event, "w": worker, "id": nodeid}
            f.write(json.dumps(line) + "\n")


def pytest_runtest_logstart(nodeid, location):
    _record("start", nodeid)


def pytest_runtest_logfinish(nodeid, location):
    _record("end", nodeid)


def report(path: str) -> None:
    events = [json.loads(line) for line in open(path)]
    t0 = min(e["t"] for e in events)
    spans = defaultdict(lambda: [float("inf"), 0.0])  # (worker, file) -> [start, end]
    for e in events:
        span = spans[(e["w"], e["id"].split("::")[0])]
        span[0], span[1] = min(span[0], e["t"] - t0), max(span[1], e["t"] - t0)
    for worker in sorted({w for w, _ in spans}):
        print(f"== {worker}")
        rows = sorted((s, e, f) for (w, f), (s, e) in spans.items() if w == worker)
        for start, end, name in rows:
            print(f"  {start:7.0f} {end:7.0f} {end - start:6.0f}  {name}")


if __name__ == "__main__":
    report(sys.argv[1])
