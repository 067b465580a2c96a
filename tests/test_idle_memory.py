"""Idle kept-alive connections hold no buffers (issue 18): a worker's memory per idle connection.

Real server, one worker: 5,000 connections each answer one request and stay open; the
worker's resident memory may grow by at most ~1.5 KB per connection (nginx: about 0.6 KB;
before the buffers were given back between requests: 7.9 KB), and the connections still work.
"""

from __future__ import annotations

import socket

from conftest import own_nofile_at_least, read_response

from tailfast.testing import rss_kib

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
IDLE = 5000
PER_CONNECTION_KIB = 1.5
SLACK_KIB = 2048  # a fixed allowance: the allocator's and Python's own growth, a busy machine


def one_request_each(port: int, count: int, batch: int = 250) -> list[socket.socket]:
    """count kept-alive connections, each after one answered request (opened in batches)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < count:
            fresh = []
            for _ in range(min(batch, count - len(socks))):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                socks.append(s)
                fresh.append(s)
                s.sendall(REQUEST)
            for s in fresh:
                response = read_response(s)
                assert response.status == 200, response
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def test_idle_kept_alive_connections_cost_little_memory(run_server):
    own_nofile_at_least(IDLE + 200)
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1",
                        "--keepalive-timeout", "300")
    server.wait_ready(1)
    snapshot = server.scoreboard()
    assert snapshot is not None
    pid = next(p["pid"] for p in snapshot["processes"] if p["ready"])
    # warm up: the request path's allocations (Python's included) exist before the baseline
    for s in one_request_each(server.port, 300):
        s.close()
    server.wait_state(lambda s: sum(p["open"] for p in s["processes"]) == 0, "warm-up closed")
    before = rss_kib(pid)
    socks = one_request_each(server.port, IDLE)
    try:
        server.wait_state(lambda s: sum(p["open"] for p in s["processes"]) >= IDLE,
                          f"{IDLE} connections open")
        grown = rss_kib(pid) - before
        per = grown / IDLE
        assert grown <= IDLE * PER_CONNECTION_KIB + SLACK_KIB, (
            f"RSS grew {grown} KiB for {IDLE} idle connections ({per:.2f} KiB each)")
        # still working: a request on some of them is answered
        for s in socks[:: IDLE // 20]:
            s.sendall(REQUEST)
            assert read_response(s).status == 200
    finally:
        for s in socks:
            s.close()
