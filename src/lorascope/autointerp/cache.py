"""SQLite response cache and spend ledger for the autointerp LLM calls.

Used by every autointerp rule (explain, categories, assign, score). A reply is
stored the moment it arrives, keyed by a hash of provider, endpoint, model,
prompt and request parameters (recorded through `lorascope.core.secrets.redact`:
known-safe settings in clear, credentials redacted, the rest salted digests;
environment references by name; no userinfo in the endpoint: see
clients.LLMEngine._request), so a rerun or a crashed run never
pays for the same call twice, and the same model name at another endpoint
never gets this one's answers. The ledger counts every HTTP request sent for
a run, across processes and reruns, so the budget cap is a cap on what the
run actually spent.

Several Snakemake jobs may share one database: WAL mode, a busy timeout and
short `BEGIN IMMEDIATE` transactions make that safe.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BudgetExceeded", "CachedReply", "ResponseCache", "cache_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    step TEXT NOT NULL,
    key TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_run ON ledger(run);
"""


class BudgetExceeded(RuntimeError):
    """The run's call or token cap would be exceeded by one more request."""


@dataclass(frozen=True)
class CachedReply:
    text: str
    input_tokens: int
    output_tokens: int


def cache_key(request: dict) -> str:
    """Stable hash of a request (provider, endpoint, model, messages, params,
    attempt)."""
    blob = json.dumps(request, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Replies by key plus a per-run ledger of paid requests.

    Thread-safe within a process (one lock around one connection) and
    process-safe through SQLite's own locking.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=60, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, key: str) -> CachedReply | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, input_tokens, output_tokens FROM responses WHERE key=?",
                (key,),
            ).fetchone()
        return None if row is None else CachedReply(*row)

    def put(self, key: str, request: dict, reply: CachedReply) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?)",
                (
                    key,
                    str(request.get("model", "")),
                    json.dumps(request, sort_keys=True, ensure_ascii=False),
                    reply.text,
                    reply.input_tokens,
                    reply.output_tokens,
                    time.time(),
                ),
            )

    def spent(self, run: str) -> tuple[int, int]:
        """(requests sent, tokens used) so far for `run`, over all processes."""
        with self._lock:
            calls, tokens = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM ledger WHERE run=?",
                (run,),
            ).fetchone()
        return int(calls), int(tokens)

    def reserve(
        self,
        run: str,
        step: str,
        key: str,
        max_calls: int | None,
        max_tokens: int | None,
    ) -> int:
        """Record one request about to be sent, or raise BudgetExceeded.

        The check and the insert share one write transaction, so concurrent
        jobs cannot both take the last call. Tokens are known only after the
        reply, so the token cap can be overshot by the requests in flight.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                calls, tokens = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM ledger WHERE run=?",
                    (run,),
                ).fetchone()
                if max_calls is not None and calls >= max_calls:
                    raise BudgetExceeded(
                        f"autointerp.budget.max_calls={max_calls} reached for run "
                        f"'{run}' ({calls} requests sent, ledger {self.path})"
                    )
                if max_tokens is not None and tokens >= max_tokens:
                    raise BudgetExceeded(
                        f"autointerp.budget.max_tokens={max_tokens} reached for run "
                        f"'{run}' ({tokens} tokens used, ledger {self.path})"
                    )
                cur = self._db.execute(
                    "INSERT INTO ledger (run, step, key, created) VALUES (?,?,?,?)",
                    (run, step, key, time.time()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(cur.lastrowid)

    def settle(self, ledger_id: int, tokens: int) -> None:
        """Attach the tokens a reply actually used to its ledger row."""
        with self._lock:
            self._db.execute(
                "UPDATE ledger SET tokens=? WHERE id=?", (int(tokens), ledger_id)
            )
