"""A counter shared by every worker through Redis.

    REDIS_URL=redis://127.0.0.1:6379/0 \\
    tailfast run examples.counter_redis:app --on-worker-start examples.counter_redis:connect

Each request increments the counter and returns its new value with the id of
the worker that answered. The Redis client is created in each worker after
fork (the worker-start hook), never in the primary: a connection opened before
fork would be shared by all workers, which would interleave their commands on
one socket and read each other's replies.
"""

from __future__ import annotations

import os

import redis

import tailfast
from tailfast import Request, Response

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
COUNTER_KEY = "tailfast:counter"

_client: redis.Redis | None = None  # one per worker process


def connect(worker_id: int) -> None:
    """Worker-start hook: runs in each worker after fork, before it accepts."""
    global _client
    _client = redis.Redis.from_url(REDIS_URL)
    _client.ping()  # fail at start-up, not on the first request


def app(request: Request) -> Response | dict[str, int | None]:
    if _client is None:
        return Response("no Redis client: run with --on-worker-start "
                        "examples.counter_redis:connect\n", status=500)
    value = int(_client.incr(COUNTER_KEY))
    return {"value": value, "worker": tailfast.get_worker_id()}
