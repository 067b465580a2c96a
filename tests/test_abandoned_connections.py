"""Connections abandoned in every state leave nothing behind in the worker, and
running out of descriptors on accept neither kills nor spins it."""

from __future__ import annotations

import socket
import struct
import time

from conftest import Server, cpu_seconds, fd_count, rss_kib, wait_until

# What a client sends before it goes away: the four states of a connection.
STATES = [
    b"",  # nothing
    b"GET /half-a-requ",  # half a request line
    b"GET / HTTP/1.1\r\nHost: h\r\nUser-Ag",  # half the head
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 50,  # half a body
]
BATCH = 500  # connections open at once per batch (2 cores: bounded)
KEEP = 3  # batches left open for the server's timeouts before the client drops them


def worker_pid(server: Server) -> int:
    (pid,) = server.live_workers().values()
    return pid


def open_batch(port: int, count: int, first: int) -> list[socket.socket]:
    socks = []
    for i in range(count):
        s = socket.socket()
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        data = STATES[(first + i) % len(STATES)]
        if data:
            s.sendall(data)
        socks.append(s)
    return socks


def drop(socks: list[socket.socket], first: int) -> None:
    """Closes half with a FIN and half with a reset (SO_LINGER 0)."""
    for i, s in enumerate(socks):
        if (first + i) % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def abandon(port: int, total: int) -> int:
    """Opens total connections in batches, each left in one of STATES; half of
    each batch is dropped by the client at once, the other half stays open for
    KEEP batches (long enough for the server's short timeouts to fire on many of
    them). Returns how many of the kept ones the server had closed by itself."""
    kept: list[list[socket.socket]] = []
    closed_by_server = 0
    opened = 0
    while opened < total:
        socks = open_batch(port, min(BATCH, total - opened), opened)
        half = len(socks) // 2
        drop(socks[:half], opened)
        kept.append(socks[half:])
        opened += len(socks)
        if len(kept) > KEEP:
            old = kept.pop(0)
            closed_by_server += sum(_server_closed(s) for s in old)
            drop(old, 0)
        time.sleep(0.3)  # pacing: kept connections live KEEP * 0.3 s, past the timeouts
    for old in kept:
        closed_by_server += sum(_server_closed(s) for s in old)
        drop(old, 0)
    return closed_by_server


def _server_closed(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        data = s.recv(4096)
        return data == b"" or data.startswith(b"HTTP/1.1 408 ")
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def wait_fds(pid: int, target: int, timeout: float) -> int:
    """pid's descriptor count once at most target (or timeout seconds pass)."""
    wait_until(lambda: fd_count(pid) <= target, timeout, interval=0.1)
    return fd_count(pid)


def settle(server: Server, pid: int, fds: int) -> tuple[int, int]:
    """Waits until the worker holds no connection and is back to fds open
    descriptors (or 5 s pass); returns its descriptors and RSS (KiB) then."""
    server.wait_state(lambda s: s["processes"][0]["open"] == 0, "no connection open")
    return wait_fds(pid, fds, 5), rss_kib(pid)


def test_ten_thousand_abandoned_connections_leave_fds_and_memory_as_they_were(run_server):
    server = run_server("protoapp:app", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--header-timeout", "0.5", "--body-timeout", "0.5",
                        "--keepalive-timeout", "0.5")
    pid = worker_pid(server)
    base_fds = fd_count(pid)
    # The first round also grows the allocator's pools to what this pattern
    # needs: RSS after it is the reference. A leak grows RSS in every round, so
    # a second identical round must leave it where the first did.
    rounds = []
    for _ in range(2):
        closed_by_server = abandon(server.port, 10_000)
        assert closed_by_server > 1000, "the server's timeouts did not close the kept connections"
        rounds.append((closed_by_server, *settle(server, pid, base_fds)))
    (_, fds1, rss1), (closed2, fds2, rss2) = rounds
    print(f"worker fds {base_fds} -> {fds1} -> {fds2}, RSS {rss1} -> {rss2} KiB over the "
          f"second round, {closed2} closed by the server's timeouts in it")
    assert fds1 == base_fds and fds2 == base_fds
    assert rss2 - rss1 < 2048, f"RSS grew by {rss2 - rss1} KiB in the second round"
    # and it still serves
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200 ")
    assert worker_pid(server) == pid


def test_emfile_on_accept_neither_kills_nor_spins_the_worker(run_server):
    # 64 descriptors for the whole process tree: a few dozen connections exhaust them
    server = run_server("protoapp:app", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--header-timeout", "30", prefix=["prlimit", "--nofile=64"])
    pid = worker_pid(server)
    held: list[socket.socket] = []
    try:
        for _ in range(100):  # well past the limit; the rest wait in the backlog
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            held.append(s)
        server.wait_for(r"accept: Too many open files; pausing accepts", timeout=2)
        assert fd_count(pid) >= 60, "the limit was not reached"
        before = cpu_seconds(pid)
        time.sleep(1.0)  # the window whose CPU use is measured
        spent = cpu_seconds(pid) - before
        print(f"worker fds {fd_count(pid)}, CPU {spent:.3f} s in 1 s at EMFILE")
        assert spent < 0.2, f"the worker spun: {spent:.2f} s of CPU in 1 s"
        assert worker_pid(server) == pid and "exited" not in server.output
    finally:
        for s in held:
            s.close()
    # descriptors free up: it accepts and serves again (the backlog drains first)
    deadline = time.monotonic() + 10
    answer = b""
    while time.monotonic() < deadline and not answer.startswith(b"HTTP/1.1 200 "):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /ok HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            try:
                answer = s.recv(100)
            except (TimeoutError, ConnectionResetError):
                answer = b""
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert worker_pid(server) == pid
