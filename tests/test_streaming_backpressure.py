"""A streamed body is pulled as the client reads: a client that never reads stalls only itself."""

from __future__ import annotations

import socket
import time

import pytest
from conftest import http_request


def _stalled_client(port: int, path: str) -> socket.socket:
    """Asks for path and never reads (a small receive buffer fills at once)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return sock


def _drained(sock: socket.socket) -> int:
    """Reads what the server left before it closed; returns the byte count."""
    sock.settimeout(5)
    total = 0
    try:
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total


@pytest.mark.parametrize(("target", "threads"), [
    ("streamapp:app", "1"), ("streamapp:wsgi", "1"), ("streamapp:app", "4"),
])
def test_client_that_never_reads_stalls_only_itself(run_server, target, threads):
    server = run_server(target, "--bind", ":0", "--workers", "1", "--threads", threads,
                        "--request-timeout", "3", "--timeout", "1", "--timeout-grace", "1")
    pid = server.wait_ready()["processes"][0]["pid"]
    stalled = _stalled_client(server.port, "/big")
    try:
        # the worker has taken the request and is waiting for the client to read
        server.wait_state(lambda s: s["processes"][0]["open"] >= 1, "the stalled connection")
        time.sleep(0.2)
        for _ in range(10):
            start = time.monotonic()
            status, _, body = http_request(server.port, "GET", "/hello")
            assert status == 200 and body == b"hello"
            assert time.monotonic() - start < 0.5
        # past --timeout + --timeout-grace: the worker was not killed for it
        time.sleep(2.5)
        assert server.wait_ready()["processes"][0]["pid"] == pid
        # dropped at --request-timeout, and the generator's close() ran
        kind = "wsgi" if target.endswith("wsgi") else "native"
        deadline = time.monotonic() + 10
        closed = b""
        while time.monotonic() < deadline:
            closed = http_request(server.port, "GET", "/closed")[2]
            if closed:
                break
            time.sleep(0.1)
        assert closed == kind.encode(), closed
        assert _drained(stalled) < 25 * 1024 * 1024
    finally:
        stalled.close()
    assert server.wait_ready()["processes"][0]["pid"] == pid


@pytest.mark.parametrize(("target", "threads", "path"), [
    ("streamapp:app", "1", "/big"), ("streamapp:wsgi", "4", "/big"),
    ("limitapps:app", "1", "/endless"),  # ASGI: its send() waits in the meantime
])
def test_a_reader_that_stalls_is_closed_at_request_timeout(run_server, target, threads, path):
    timeout = 2.0
    server = run_server(target, "--bind", ":0", "--workers", "1", "--threads", threads,
                        "--request-timeout", str(timeout), "--timeout", "60")
    stalled = _stalled_client(server.port, path)
    try:
        start = time.monotonic()  # the output stops moving within milliseconds of this
        server.wait_state(lambda s: s["processes"][0]["open"] == 1, "the stalled connection")
        server.wait_state(lambda s: s["processes"][0]["open"] == 0, "the stalled reader closed",
                          timeout=4 * timeout)
        elapsed = time.monotonic() - start
    finally:
        stalled.close()
    # at --request-timeout, the sweep (every quarter of it) being at most that late
    assert timeout - 0.1 <= elapsed <= 1.5 * timeout, elapsed


@pytest.mark.parametrize("target", ["streamapp:app", "streamapp:wsgi"])
def test_streamed_body_arrives_whole_while_others_are_served(run_server, target):
    server = run_server(target, "--bind", ":0", "--workers", "1")
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\nGET /closed HTTP/1.1\r\nHost: t\r\n\r\n")
    assert http_request(server.port, "GET", "/hello")[0] == 200  # while the body waits
    data = bytearray()
    sock.settimeout(10)
    # chunked: 400 chunks of 64 KiB, then the pipelined answer naming the closed body
    while not data.endswith(b"native" if target.endswith("app") else b"wsgi"):
        chunk = sock.recv(1 << 20)
        assert chunk, bytes(data[-200:])
        data += chunk
    sock.close()
    assert data.count(b"\r\n10000\r\n") + data.startswith(b"10000") >= 399
