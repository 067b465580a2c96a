"""A counter shared by every worker through SQLite (WAL mode, one connection per worker).

    COUNTER_DB=/tmp/counter.sqlite3 \\
    tailfast run examples.counter_sqlite:app --on-worker-start examples.counter_sqlite:connect

WAL mode lets readers and the one writer proceed together; the busy timeout
makes a worker wait for the write lock instead of failing with "database is
locked" when another worker holds it. The connection is opened in each worker
after fork: a SQLite connection must never cross a fork.
"""

from __future__ import annotations

import os
import sqlite3

import tailfast
from tailfast import Request, Response

DATABASE = os.environ.get("COUNTER_DB", "counter.sqlite3")
BUSY_TIMEOUT_MS = 10_000

_db: sqlite3.Connection | None = None  # one per worker process


def connect(worker_id: int) -> None:
    """Worker-start hook: runs in each worker after fork, before it accepts."""
    global _db
    _db = sqlite3.connect(DATABASE, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    _db.execute("PRAGMA journal_mode=WAL")
    _db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _db.execute(
        "CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
    )


def app(request: Request) -> Response | dict[str, int | None]:
    if _db is None:
        return Response("no database: run with --on-worker-start "
                        "examples.counter_sqlite:connect\n", status=500)
    # one statement, so the increment is atomic without an explicit transaction
    (value,) = _db.execute(
        "INSERT INTO counter (name, value) VALUES ('hits', 1) "
        "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
    ).fetchone()
    return {"value": value, "worker": tailfast.get_worker_id()}
