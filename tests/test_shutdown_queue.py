"""A stop loses nothing at its edges: every connection in the listen queue is
served even when a worker cannot take it at once (--max-connections, EMFILE),
and handshakes in progress when the stop begins complete and are served."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import read_response, wait_until

SYS_PIDFD_GETFD = 438  # x86-64 and the generic table alike


@contextmanager
def shared_listener(pid: int, port: int) -> Iterator[socket.socket]:
    """The primary's listening socket itself (pidfd_getfd: the same socket, not
    a copy), to read its queue and set options on it from outside."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            assert fd >= 0, os.strerror(ctypes.get_errno())
            sock = socket.socket(fileno=fd)
            if (sock.family == socket.AF_INET and sock.getsockname()[1] == port
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
                try:
                    yield sock
                finally:
                    sock.close()
                return
            sock.close()
        raise AssertionError(f"no listener on port {port} in process {pid}")
    finally:
        os.close(pidfd)


def queued(listener: socket.socket) -> int:
    """Connections in the listen queue (TCP_INFO on a listener: tcpi_unacked)."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 24)[0]


def _request(sock: socket.socket, path: str = "/") -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())


def _answers(conns: list[socket.socket]) -> list[str]:
    """Each connection's answer ("200 b'...'") or the error reading it; closes them."""
    outcomes = []
    for s in conns:
        try:
            response = read_response(s)
            outcomes.append(f"{response.status} {response.body!r}")
        except OSError as exc:
            outcomes.append(repr(exc))
        finally:
            s.close()
    return outcomes


def test_connections_queued_behind_max_connections_are_served_at_a_stop(run_server):
    """The worker is at --max-connections when the stop comes, so it cannot
    take the queue then; it takes it as its connections close, one by one,
    instead of leaving it to be reset when the server exits."""
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1",
                        "--max-connections", "1")
    held = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    _request(held)
    assert read_response(held).status == 200  # accepted: the worker is at its cap
    waiting = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        _request(s)
        waiting.append(s)
    with shared_listener(server.proc.pid, server.port) as listener:
        assert wait_until(lambda: queued(listener) == 3, timeout=10), queued(listener)
    server.signal(signal.SIGTERM)
    outcomes = _answers(waiting)
    held.close()
    assert outcomes == ["200 b'Hello, World!'"] * 3
    assert server.wait(15) == 0



def test_connections_queued_at_emfile_are_served_at_a_stop(run_server):
    """The worker is out of descriptors when the stop comes (its RLIMIT_NOFILE
    lowered from outside to what it holds), so the drain's first accept fails
    with EMFILE; it retries after its pause, as connections close, instead of
    leaving the queue to be reset when the server exits."""
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    (worker,) = server.workers_now().values()
    held = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    _request(held)
    assert read_response(held).status == 200  # closed by the drain: a descriptor frees
    fds = [int(name) for name in os.listdir(f"/proc/{worker}/fd")]
    limit = max(fds) + 1
    _, hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (limit, hard))
    free = limit - len(fds)  # numbers below the highest that are unused: accepted now
    waiting = []
    for _ in range(free + 3):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        _request(s)
        waiting.append(s)
    with shared_listener(server.proc.pid, server.port) as listener:
        assert wait_until(lambda: queued(listener) == 3, timeout=10), queued(listener)
    server.wait_for("pausing accepts")
    server.signal(signal.SIGTERM)
    outcomes = _answers(waiting)
    held.close()
    assert outcomes == ["200 b'Hello, World!'"] * (free + 3)
    assert server.wait(15) == 0


SO_GET_FILTER = 26  # = SO_ATTACH_FILTER: the attached filter (empty: none)


def test_a_handshake_in_progress_at_the_stop_completes_and_is_served(run_server):
    """A client whose SYN was answered before the stop sends its last ACK after
    it: the stop filter keeps new SYNs out, not that ACK, and the connection it
    completes is served. The listener's TCP_DEFER_ACCEPT holds the handshake
    open (a bare ACK is not taken) until the request's first segment, which
    carries the ACK, is sent after the filter is on: the race made certain."""
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    with shared_listener(server.proc.pid, server.port) as listener:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 30)
        busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        _request(busy, "/slow?2")  # keeps the worker (draining) for a while
        server.wait_busy("GET", "/slow")
        late = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        assert queued(listener) == 0  # its handshake is not complete on the server's side
        server.signal(signal.SIGTERM)
        assert wait_until(lambda: listener.getsockopt(socket.SOL_SOCKET, SO_GET_FILTER, 1024),
                          timeout=10)
        _request(late)
    new = socket.socket()  # while the worker drains, a new connection stays out
    new.settimeout(0.3)
    try:
        with pytest.raises(TimeoutError):  # its SYN dropped, not refused nor taken
            new.connect(("127.0.0.1", server.port))
    finally:
        new.close()
    try:
        assert read_response(late).status == 200
    finally:
        late.close()
    assert read_response(busy).status == 200
    busy.close()
    assert server.wait(15) == 0
