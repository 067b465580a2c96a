"""Fixtures that run real tailfast servers in real processes on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"

LISTENING = re.compile(r"tailfast: primary (\d+) listening on (\S+) \((\d+) workers?, (\S+)\)")
STARTED = re.compile(r"tailfast: worker (\d+) \(pid (\d+)\) started")
READY = re.compile(r"tailfast: worker (\d+) \(pid (\d+)\) ready in")
ENDED = re.compile(r"tailfast: worker (\d+) \(pid (\d+)\) (exited|killed)")


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def fd_count(pid: int) -> int:
    """Open file descriptors of pid."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    """Resident memory of pid in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(predicate: Callable[[], object], timeout: float = 5.0,
               interval: float = 0.01) -> bool:
    """Polls predicate until it is true or timeout seconds pass; returns the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Server:
    """A `tailfast run` process whose stderr is collected line by line."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        prefix: list[str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        full_env = dict(os.environ)
        for name in list(full_env):
            if name.startswith("TAILFAST_") or name == "WORKERS":
                del full_env[name]
        full_env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(ROOT)])
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        command = [*(prefix or []), sys.executable, "-m", "tailfast", "run", *args]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=str(cwd or ROOT),
            pass_fds=pass_fds,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.url = ""
        self.port = 0
        self.host = "127.0.0.1"
        self.workers = 0
        self.seen_pids: set[int] = set()  # before the reader starts: it adds to it
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                match = STARTED.search(line)
                if match:
                    self.seen_pids.add(int(match.group(2)))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 10.0,
                 count: int = 1) -> list[re.Match[str]]:
        """Waits until pattern has matched count lines of stderr; returns the matches."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no {count} line(s) matching {regex.pattern!r}; stderr:\n{self.output}"
                    )
                self._cond.wait(min(remaining, 0.1))

    def wait_listening(self, timeout: float = 15.0) -> Server:
        match = self.wait_for(LISTENING, timeout)[0]
        self.url = match.group(2)
        self.workers = int(match.group(3))
        port = re.search(r":(\d+)$", self.url)
        if port:
            self.port = int(port.group(1))
        if self.url.startswith("http://[::1]"):
            self.host = "::1"
        self.wait_for(STARTED, timeout, count=self.workers)
        self.wait_for(READY, timeout, count=self.workers)
        return self

    def live_workers(self) -> dict[int, int]:
        """worker id -> pid of the workers started and not yet reported ended."""
        live: dict[int, int] = {}
        with self._cond:
            for line in self.lines:
                started = STARTED.search(line)
                if started:
                    live[int(started.group(1))] = int(started.group(2))
                ended = ENDED.search(line)
                if ended and live.get(int(ended.group(1))) == int(ended.group(2)):
                    del live[int(ended.group(1))]
        return live

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        """Ends the primary and every worker it started (by PID), however it is."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        deadline = time.monotonic() + 5
        while any(pid_alive(p) for p in self.seen_pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in self.seen_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def run_server() -> Iterator[object]:
    """run_server(*args, env=..., cwd=..., wait=True) starts `tailfast run`; all are
    stopped at the end of the test, and the test fails if any process is left."""
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
              wait: bool = True, prefix: list[str] | None = None,
              pass_fds: tuple[int, ...] = ()) -> Server:
        server = Server(list(args), env=env, cwd=cwd, prefix=prefix, pass_fds=pass_fds)
        servers.append(server)
        if wait:
            server.wait_listening()
        return server

    yield start
    leftovers = []
    for server in servers:
        server.stop()
        leftovers += [p for p in server.seen_pids if pid_alive(p)]
    assert not leftovers, f"processes left behind: {leftovers}"


def http_request(port: int, method: str = "GET", path: str = "/", body: bytes = b"",
                 headers: dict[str, str] | None = None, host: str = "127.0.0.1",
                 timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection with http.client; returns status, headers, body."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 5.0) -> bytes:
    """Sends data, half-closes, and returns everything the server sent until it closed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
