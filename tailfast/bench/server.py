"""A `tailfast run` server in a child process for benchmarks: the test harness's Server, pinned."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tailfast.testing import STARTED, Server

__all__ = ["STARTED", "BenchServer"]


class BenchServer(Server):
    """Starts `python -m tailfast run APP --workers N --bind 127.0.0.1:0` in the
    current directory, pinned to cpus when given, its output on stderr only;
    knows its port and the pids of its primary and workers."""

    def __init__(self, app: str, workers: int, cpus: Sequence[int] | None = None,
                 extra: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        super().__init__([app, "--workers", str(workers), "--bind", "127.0.0.1:0", *extra],
                         env=env, cwd=os.getcwd(), cpus=cpus, stdout=False)

    def wait_ready(self, timeout: float = 30.0) -> BenchServer:  # type: ignore[override]
        """Waits for the listening line and every worker ready in the scoreboard."""
        self.wait_listening(timeout)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def worker_pids(self) -> dict[int, int]:
        """worker id -> pid, by the primary's own account."""
        return self.live_workers()

    def __enter__(self) -> BenchServer:
        return self
