"""Servers that are not tailfast for bench/: started from a command line, pinned, stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from tailfast.testing import server_env

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


class Peer:
    """A server started from a command line in a session of its own, pinned to
    cpus, with the harness's environment (this tree and tests/apps on the path)."""

    def __init__(self, command: list[str], port: int, cpus: Iterable[int],
                 cwd: str | None = None) -> None:
        pin = set(cpus)
        self.port = port
        self.proc = subprocess.Popen(command, env=server_env(), cwd=cwd or str(ROOT),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=lambda: os.sched_setaffinity(0, pin),
                                     start_new_session=True)
        try:
            wait_port(port, self.proc)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        # The peer's own process group: its workers (gunicorn, nginx) go with it.
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
