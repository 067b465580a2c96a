"""Test harness: start `tailfast run` servers, wait on their observable state, read raw HTTP.

Used by tests/, bench/ and tailfast/bench/. A test waits on what the server
shows (the scoreboard that `tailfast status` reads, a readiness probe, /proc),
not on sleeps; a log line is waited for only where that line is what a test
checks. The one exception is the listening line, a documented contract: the
actual port and the primary's pid are read from it.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
TEST_APPS = ROOT / "tests" / "apps"

LISTENING = re.compile(r"tailfast: primary (\d+) listening on (\S+) \((\d+) workers?, (\S+)\)")
STARTED = re.compile(r"tailfast: worker (\d+) \(pid (\d+)\) started")
ENDED = re.compile(r"tailfast: worker (\d+) \(pid (\d+)\) (exited|killed)")

Snapshot = dict[str, Any]


# ------------------------------------------------------------- environment


def server_env(extra: Mapping[str, str] | None = None,
               paths: Sequence[str | Path] = ()) -> dict[str, str]:
    """The environment of a child process under test: this one's, without any
    TAILFAST_*, LISTEN_* or WORKERS setting (they would change what is tested),
    PYTHONPATH = paths, tests/apps (in a source tree) and this tree's root,
    unbuffered Python output; then extra on top."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TAILFAST_", "LISTEN_")) and k != "WORKERS"}
    path = [str(p) for p in paths]
    if TEST_APPS.is_dir():
        path.append(str(TEST_APPS))
    path.append(str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# -------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


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
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> dict[int, str]:
    """pid -> state letter of pid's children."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except OSError:
            continue
        if int(fields[1]) == pid:
            found[int(entry)] = fields[0]
    return found


def wait_until(predicate: Callable[[], object], timeout: float = 5.0,
               interval: float = 0.01) -> bool:
    """Polls predicate until it is true or timeout seconds pass; returns the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# -------------------------------------------------------------- scoreboard


def read_scoreboard(primary_pid: int) -> Snapshot | None:
    """The scoreboard of the primary with this pid, or None while there is none
    (not created yet, or removed at exit). What `tailfast status --json` prints."""
    from tailfast import _core
    from tailfast.server import scoreboard_dirs

    for directory in scoreboard_dirs():
        path = os.path.join(directory, f"tailfast-{primary_pid}.scoreboard")
        try:
            snapshot: Snapshot = _core.read_scoreboard(path)
        except OSError:
            continue
        if snapshot["primary_pid"] != primary_pid:
            continue
        if snapshot["uptime"] > 1.0:  # only an old board can be a dead primary's
            age = _process_age(primary_pid)
            if age is not None and snapshot["uptime"] > age + 1.0:
                continue  # left by a killed primary whose pid this process reuses
        return snapshot
    return None


def _process_age(pid: int) -> float | None:
    """Seconds since the process with this pid started (from /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            since_boot = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return since_boot - start_ticks / os.sysconf("SC_CLK_TCK")


def ready_count(snapshot: Snapshot) -> int:
    return sum(p["ready"] for p in snapshot["processes"])


def busy_with(snapshot: Snapshot, method: str, path: str) -> list[Snapshot]:
    """The worker processes whose handler is running `method path...` now."""
    wanted = f"{method} {path}"
    return [p for p in snapshot["processes"]
            if p["state"] == "busy" and (p["request"] or "").startswith(wanted)]


# ------------------------------------------------------------ HTTP responses


@dataclass
class Response:
    """One HTTP response as read off the wire; body is the payload (de-chunked)."""

    version: str
    status: int
    reason: str
    fields: list[tuple[str, str]]  # (lower-case name, value), in order
    body: bytes
    chunked: bool = False
    rest: bytes = b""  # what followed this response in the bytes read
    headers: dict[str, str] = field(init=False)  # lower-case name -> last value

    def __post_init__(self) -> None:
        self.headers = dict(self.fields)

    @property
    def status_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}".rstrip()


class Incomplete(Exception):
    """More bytes are needed for a whole response."""


class ConnectionClosed(ConnectionError, EOFError):
    """The server closed the connection before a whole response."""


def _parse_head(head: bytes) -> tuple[str, int, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    fields = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"header line without ':': {line!r}")
        fields.append((name.strip().lower(), value.strip()))
    return version, int(status), (reason or [""])[0], fields


def _dechunk(data: bytes) -> tuple[bytes, int]:
    """The payload of a chunked body at the start of data, and the bytes it took.
    Raises Incomplete or ValueError (this server never sends trailers)."""
    out, pos = [], 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise Incomplete
        size = int(data[pos:end].split(b";", 1)[0], 16)
        pos = end + 2
        if size == 0:
            if len(data) < pos + 2:
                raise Incomplete
            if data[pos:pos + 2] != b"\r\n":
                raise ValueError(f"trailer or garbage after the last chunk: {data[pos:]!r}")
            return b"".join(out), pos + 2
        if len(data) < pos + size + 2:
            raise Incomplete
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise ValueError(f"chunk of {size} bytes not followed by CRLF")
        out.append(data[pos:pos + size])
        pos += size + 2


def parse_response(data: bytes, head_request: bool = False, eof: bool = True) -> Response:
    """The first response in data (interim 1xx ones count as responses). Framed
    by Content-Length, chunked encoding, or the end of the connection when eof
    says the server closed after data. Raises Incomplete when data ends first."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise Incomplete
    version, status, reason, fields = _parse_head(data[:end])
    headers = dict(fields)
    start = end + 4
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    if head_request or 100 <= status < 200 or status in (204, 304):
        body, stop = b"", start
    elif chunked:
        body, used = _dechunk(data[start:])
        stop = start + used
    elif "content-length" in headers:
        stop = start + int(headers["content-length"])
        if len(data) < stop:
            raise Incomplete
        body = data[start:stop]
    elif eof:
        body, stop = data[start:], len(data)
    else:
        raise Incomplete
    return Response(version, status, reason, fields, body, chunked, data[stop:])


def parse_whole(data: bytes, head_request: bool = False) -> Response:
    """The one response in data, all a server sent before it closed: fails if
    it is incomplete or if anything follows it."""
    try:
        response = parse_response(data, head_request, eof=True)
    except Incomplete:
        raise AssertionError(f"an incomplete response: {data[:300]!r}") from None
    assert response.rest == b"", f"more after the response: {response.rest[:100]!r}"
    return response


def parse_head(data: bytes) -> tuple[Response, bytes]:
    """The head of the response in data (a Response without body), and the
    bytes after it as sent: for a body that is cut or framed wrong on purpose."""
    end = data.find(b"\r\n\r\n")
    assert end >= 0, f"no whole head in {data[:300]!r}"
    version, status, reason, fields = _parse_head(data[:end])
    return Response(version, status, reason, fields, b""), data[end + 4:]


def check_strict(response: Response, unique_fields: bool = True) -> Response:
    """What tailfast sends: HTTP/1.1, a Content-Length on every response that can
    have a body (no chunked framing), and, with unique_fields, no field twice."""
    assert response.version == "HTTP/1.1", response.status_line
    if unique_fields:
        names = [name for name, _ in response.fields]
        assert len(names) == len(set(names)), f"repeated field in {response.fields}"
    if response.status >= 200 and response.status not in (204, 304):
        assert "content-length" in response.headers and not response.chunked, response.fields
    return response


class ResponseReader:
    """Reads responses off a socket one at a time (keep-alive and pipelining)."""

    def __init__(self, sock: socket.socket, strict: bool = False) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False
        self.strict = strict

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        self.eof = not chunk
        return bool(chunk)

    def response(self, head_request: bool = False) -> Response:
        """The next response; ConnectionClosed when the server closes before it is whole."""
        while True:
            try:
                response = parse_response(self.buf, head_request, eof=self.eof)
                break
            except Incomplete:
                if self.eof or not self._fill():
                    raise ConnectionClosed(f"connection closed; got {self.buf!r}") from None
        self.buf = response.rest
        return check_strict(response) if self.strict else response

    def closed(self) -> bool:
        """True when the server closes with nothing more to read."""
        while True:
            try:
                if not self._fill():
                    return self.buf == b""
            except ConnectionResetError:
                return self.buf == b""


def read_response(sock: socket.socket, head_request: bool = False) -> Response:
    """One response from sock when nothing is to follow it before the next
    request (bytes read past it are dropped: use a ResponseReader for more)."""
    return ResponseReader(sock).response(head_request)


def connect(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    """A TCP connection with Nagle off (small writes go out as written)."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


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


def http_request(port: int, method: str = "GET", path: str = "/", body: bytes = b"",
                 headers: dict[str, str] | None = None, host: str = "127.0.0.1",
                 timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection with http.client; returns status, headers, body."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


# ------------------------------------------------------------------ servers


class Server:
    """A `tailfast run` process: its stderr collected line by line (and stdout,
    when piped), its URL and primary pid from the listening line, its workers
    from the scoreboard. prefix wraps the command (taskset, unshare); cpus pins
    the whole process tree."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        prefix: Sequence[str] = (),
        pass_fds: tuple[int, ...] = (),
        cpus: Iterable[int] | None = None,
        stdout: bool = True,
    ) -> None:
        command = [*prefix, sys.executable, "-m", "tailfast", "run", *args]
        pin = set(cpus) if cpus else None

        def preexec() -> None:
            if pin:
                os.sched_setaffinity(0, pin)

        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=server_env(env),
            cwd=str(cwd or ROOT),
            pass_fds=pass_fds,
            preexec_fn=preexec if pin else None,
        )
        self.lines: list[str] = []
        self.stdout_lines: list[str] = []
        self.seen_pids: set[int] = set()  # every worker the primary said it started
        self.url = ""
        self.port = 0
        self.host = "127.0.0.1"
        self.workers = 0
        self.primary_pid = 0  # as the server sees it (1 in a PID namespace)
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.lines),
                                          daemon=True)]
        if stdout:
            self._readers.append(threading.Thread(
                target=self._read, args=(self.proc.stdout, self.stdout_lines), daemon=True))
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            with self._cond:
                into.append(line.rstrip("\n"))
                if into is self.lines:
                    started = STARTED.search(line)
                    if started:
                        self.seen_pids.add(int(started.group(2)))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        """Everything on stderr so far."""
        with self._cond:
            return "\n".join(self.lines)

    @property
    def stdout(self) -> str:
        with self._cond:
            return "\n".join(self.stdout_lines)

    # -- log lines: for what a test checks in the log, and the listening line

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
                if remaining <= 0 or (self.proc.poll() is not None
                                      and not self._readers[0].is_alive()):
                    raise AssertionError(
                        f"no {count} line(s) matching {regex.pattern!r}; stderr:\n"
                        + "\n".join(self.lines))
                self._cond.wait(min(remaining, 0.1))

    def wait_listening(self, timeout: float = 15.0, ready: bool = True) -> Server:
        """Waits for the listening line (the documented way to learn the actual
        port), then, when ready, for every worker to be ready in the scoreboard."""
        match = self.wait_for(LISTENING, timeout)[0]
        self.primary_pid = int(match.group(1))
        self.url = match.group(2)
        self.workers = int(match.group(3))
        port = re.search(r":(\d+)$", self.url)
        if port:
            self.port = int(port.group(1))
        if self.url.startswith("http://[::1]"):
            self.host = "::1"
        if ready:
            Server.wait_ready(self, self.workers, timeout)  # not a subclass's
        return self

    def live_workers(self) -> dict[int, int]:
        """worker id -> pid of the newest process of each worker id, starting,
        ready or draining, from the scoreboard (the primary frees an entry when
        it reaps the process); once the primary is gone, from its log."""
        snapshot = self.scoreboard()
        if snapshot is None:
            return self._logged_workers()
        live: dict[int, int] = {}
        for p in sorted(snapshot["processes"], key=lambda p: -p["uptime"]):
            live[p["worker_id"]] = p["pid"]  # the newest last
        return live

    def _logged_workers(self) -> dict[int, int]:
        """worker id -> pid of the workers the primary logged as started and not
        yet as ended."""
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

    # -- the scoreboard: what the server is doing now

    def scoreboard(self) -> Snapshot | None:
        """The scoreboard now (what `tailfast status --json` prints), or None."""
        return read_scoreboard(self.primary_pid or self.proc.pid)

    def wait_state(self, predicate: Callable[[Snapshot], object], what: str,
                   timeout: float = 10.0) -> Snapshot:
        """Polls the scoreboard until predicate(snapshot) is true; returns that
        snapshot. Fails naming what was awaited, with the last snapshot and stderr."""
        deadline = time.monotonic() + timeout
        snapshot = None
        while True:
            snapshot = self.scoreboard()
            if snapshot is not None and predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"not seen within {timeout} s: {what}\n"
                                     f"scoreboard: {snapshot}\nstderr:\n{self.output}")
            time.sleep(0.005)

    def wait_ready(self, count: int | None = None, timeout: float = 15.0) -> Snapshot:
        """Waits until at least count (default: all) worker processes are ready."""
        wanted = self.workers if count is None else count
        return self.wait_state(lambda s: ready_count(s) >= wanted,
                               f"{wanted} workers ready", timeout)

    def wait_busy(self, method: str, path: str, count: int = 1,
                  timeout: float = 10.0) -> list[Snapshot]:
        """Waits until count workers are running the handler for `method path`
        (path a prefix, query included); returns those processes."""
        snapshot = self.wait_state(lambda s: len(busy_with(s, method, path)) >= count,
                                   f"{count} workers busy with {method} {path}", timeout)
        return busy_with(snapshot, method, path)

    def wait_idle(self, timeout: float = 10.0) -> Snapshot:
        """Waits until no worker holds a connection or runs a handler: every
        request a client saw answered is counted in the scoreboard by then."""
        return self.wait_state(lambda s: not any(p["open"] or p["state"] == "busy"
                                                 for p in s["processes"]),
                               "no connection open", timeout)

    def workers_now(self) -> dict[int, int]:
        """worker id -> pid of the ready workers that are not being retired."""
        snapshot = self.scoreboard() or {"processes": []}
        return {p["worker_id"]: p["pid"] for p in snapshot["processes"]
                if p["ready"] and not p["retire"] and p["state"] != "draining"}

    def wait_replaced(self, worker_id: int, old_pid: int, timeout: float = 10.0) -> int:
        """Waits until worker_id is served by a ready process other than old_pid
        and old_pid is gone from the scoreboard; returns the new pid."""
        def replaced(s: Snapshot) -> bool:
            pids = {p["pid"] for p in s["processes"]}
            return old_pid not in pids and any(
                p["worker_id"] == worker_id and p["ready"] for p in s["processes"])
        self.wait_state(replaced, f"worker {worker_id} (pid {old_pid}) replaced", timeout)
        return self.workers_now()[worker_id]

    def probe(self, path: str, timeout: float = 10.0) -> int:
        """Polls GET path (a readiness probe) until it answers 200; returns 200.
        Fails with the last status or error."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = http_request(self.port, path=path, host=self.host, timeout=2)[0]
            except OSError as exc:
                status, error = 0, repr(exc)
            else:
                error = f"status {status}"
            if status == 200:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} not ready within {timeout} s: {error}\n"
                                     + self.output)
            time.sleep(0.01)

    # -- the process

    def pids(self) -> list[int]:
        """The primary and every worker it started (by the primary's own log)."""
        return [self.proc.pid, *self.live_workers().values()]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        """Waits for the primary to exit and for its output to be read; its status."""
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    @property
    def own_namespace(self) -> bool:
        """True when the server runs in a PID namespace of its own (its primary
        is not our child's pid): the pids it logs are not ours to look at."""
        return bool(self.primary_pid) and self.primary_pid != self.proc.pid

    def leftovers(self) -> list[int]:
        """Workers this server started that are still alive."""
        if self.own_namespace:
            return []  # they die with the namespace's PID 1
        return [p for p in self.seen_pids if pid_alive(p)]

    def stop(self) -> None:
        """Ends the primary and every worker it started (by PID), however it is."""
        if self.proc.poll() is None:
            # in a PID namespace the primary is the launcher's child
            targets = list(children(self.proc.pid)) if self.own_namespace else [self.proc.pid]
            for pid in targets:
                os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for reader in self._readers:
            reader.join(5)
        # workers die with the primary (PDEATHSIG): give them time to go
        wait_until(lambda: not self.leftovers(), timeout=5, interval=0.02)
        for pid in self.leftovers():
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------- load


class Load:
    """Threads sending GET path, a new connection each, until stopped or limit
    seconds pass (bounded: at most 100,000 requests a thread). Counts answers,
    keeps every failure and the first word of each body (a version)."""

    def __init__(self, port: int, threads: int = 4, limit: float = 30.0, path: str = "/") -> None:
        self.port = port
        self.path = path
        self.ok = 0
        self.failures: list[str] = []
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + limit
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        for _ in range(100_000):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                return
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read().decode()
                with self._lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.versions.append(body.split()[0])
                    else:
                        self.failures.append(f"status {resp.status}")
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                with self._lock:
                    self.failures.append(repr(exc))
            finally:
                conn.close()

    def wait_answered(self, count: int, timeout: float = 10.0) -> None:
        """Waits until count requests were answered (or fails)."""
        if not wait_until(lambda: self.ok >= count, timeout):
            raise AssertionError(f"{self.ok} of {count} answered in {timeout} s; "
                                 f"failures: {self.failures[:5]}")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
