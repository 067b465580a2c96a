"""The cluster manager without HTTP (Node's cluster.fork for any function)."""

from __future__ import annotations

from collections.abc import Callable

from tailfast import _core


def spawn_workers(
    n: int, target: Callable[[int], int | None], graceful_timeout: float = 30.0
) -> int:
    """Forks n workers that each run target(worker_id), forks a replacement
    into the same slot whenever one dies, and blocks until the primary gets
    SIGTERM/SIGINT (workers get SIGTERM, then SIGKILL after graceful_timeout)
    or SIGQUIT. Returns the primary's exit status."""
    return int(_core.spawn_workers(n, target, graceful_timeout))
