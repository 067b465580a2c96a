"""A `tailfast run` (or any server command) in a child process, for benchmarks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

LISTENING = re.compile(r"tailfast: primary (\d+) listening on http://(\S+):(\d+) ")
STARTED = re.compile(r"tailfast: worker (\d+) \(pid (\d+)\) started")


class BenchServer:
    """Starts `python -m tailfast run APP --workers N --bind 127.0.0.1:0`, pinned to
    cpus when given, and knows its port and the pids of its primary and workers."""

    def __init__(self, app: str, workers: int, cpus: Sequence[int] | None = None,
                 extra: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "tailfast", "run", app, "--workers", str(workers),
                   "--bind", "127.0.0.1:0", *extra]
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("TAILFAST_") and k != "WORKERS"}
        full_env.update(env or {})
        pin = set(cpus) if cpus else None

        def preexec() -> None:
            if pin:
                os.sched_setaffinity(0, pin)

        self.workers = workers
        self.lines: list[str] = []
        self.port = 0
        self.worker_pids: dict[int, int] = {}
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=full_env, preexec_fn=preexec)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                started = STARTED.search(line)
                if started:
                    self.worker_pids[int(started.group(1))] = int(started.group(2))
                listening = LISTENING.search(line)
                if listening:
                    self.port = int(listening.group(3))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_ready(self, timeout: float = 30.0) -> BenchServer:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.port and len(self.worker_pids) >= self.workers):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start:\n" + "\n".join(self.lines[-20:]))
                self._cond.wait(0.05)
        return self

    def pids(self) -> list[int]:
        with self._cond:
            return [self.proc.pid, *self.worker_pids.values()]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; workers die with the primary (PDEATHSIG)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        for pid in list(self.worker_pids.values()):
            deadline = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
