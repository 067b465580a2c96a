"""The HTTP/1.1 engine seen from a client: strict parsing (no smuggling), limits,
100-continue, timeouts, connection handling. Real servers, real sockets.

Most cases share one server (module scope) with small limits so that they are
cheap to reach; timeout and connection-cap tests start their own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from conftest import Response, ResponseReader, Server, connect, pid_alive, rss_kib

# Small limits, so that each is reached with a few kilobytes.
LIMIT_ARGS = [
    "--limit-request-line", "256",
    "--limit-request-fields", "20",
    "--limit-request-field-size", "256",
    "--limit-request-body", "4096",
]


def start(*args: str) -> Server:
    args_ = ["protoapp:app", "--bind", "127.0.0.1:0", "--workers", "1", *args]
    return Server(args_).wait_listening()


def stop(server: Server) -> None:
    server.stop()
    assert not server.leftovers(), f"processes left behind: {server.leftovers()}"


@pytest.fixture(scope="module")
def shared() -> Iterator[Server]:
    server = start(*LIMIT_ARGS, "--keepalive-timeout", "5")
    yield server
    stop(server)


@pytest.fixture
def own() -> Iterator[object]:
    """own(*args) starts a dedicated one-worker server, stopped after the test."""
    servers: list[Server] = []

    def make(*args: str) -> Server:
        servers.append(start(*args))
        return servers[-1]

    yield make
    for server in servers:
        stop(server)


# --------------------------------------------------------------------- helpers


def Reader(sock: socket.socket) -> ResponseReader:  # noqa: N802 - reads like the class it makes
    """Responses off sock, checked for what tailfast always sends (HTTP/1.1,
    Content-Length framing, no field twice)."""
    return ResponseReader(sock, strict=True)


def one_exchange(port: int, data: bytes) -> tuple[Response, bool]:
    """Sends data without half-closing; returns the first response and whether
    the server then closed the connection with nothing else sent."""
    with connect(port) as s:
        s.sendall(data)
        reader = Reader(s)
        first = reader.response()
        return first, reader.closed()


def get(host: str = "h", path: str = "/", extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n".encode()


def worker_pid(server: Server) -> int:
    (pid,) = server.live_workers().values()
    return pid


def handler_calls(port: int) -> int:
    response, _ = one_exchange(port, get(path="/count", extra="Connection: close\r\n"))
    return int(response.body)


# Accepted and rejected requests, whole and split, are the corpus in
# tests/http_corpus/ (tests/test_http_corpus.py).


def test_chunked_body_is_decoded_for_the_handler(shared):
    data = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;e=1\r\n \r\n5\r\nworld\r\n0\r\nT: x\r\n\r\n")
    with connect(shared.port) as s:
        s.sendall(data)
        assert Reader(s).response().body == b"hello world"


# ---------------------------------------------------------------- 100-continue


def test_100_continue_is_sent_before_the_body_is_read(shared):
    with connect(shared.port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5\r\n\r\n")
        reader = Reader(s)
        interim = reader.response()
        assert interim.status == 100
        s.sendall(b"hello")
        final = reader.response()
        assert (final.status, final.body) == (200, b"hello")


def test_100_continue_over_the_limit_is_413_at_once(shared):
    with connect(shared.port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5000\r\n\r\n")
        reader = Reader(s)
        response = reader.response()  # no body sent: the answer cannot wait for one
        assert response.status == 413
        assert reader.closed()


def test_100_continue_not_sent_when_the_body_is_already_there(shared):
    with connect(shared.port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5\r\n\r\nhello")
        response = Reader(s).response()
        assert (response.status, response.body) == (200, b"hello")


def test_100_continue_not_sent_to_http10(shared):
    with connect(shared.port) as s:
        s.sendall(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(100)
        s.settimeout(5)
        s.sendall(b"hello")
        assert Reader(s).response().status == 200


# ------------------------------------------------------------ connection reuse


def test_pipelined_requests_in_one_write_are_answered_in_order(shared):
    requests = []
    for i in range(100):
        if i % 3 == 0:
            requests.append(get(path=f"/g{i}"))
        elif i % 3 == 1:
            body = f"body {i}".encode()
            requests.append(b"POST /p%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s"
                            % (i, len(body), body))
        else:
            requests.append(b"POST /c%d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"2\r\n%02d\r\n0\r\n\r\n" % (i, i))
    with connect(shared.port) as s:
        s.sendall(b"".join(requests))
        reader = Reader(s)
        for i in range(100):
            response = reader.response()
            assert response.status == 200
            assert response.headers["x-target"][2:] == str(i)
            if i % 3 == 1:
                assert response.body == f"body {i}".encode()
            elif i % 3 == 2:
                assert response.body == b"%02d" % i


def test_connection_close_stops_the_pipeline(shared):
    data = get(path="/1") + get(path="/2", extra="Connection: close\r\n") + get(path="/3")
    with connect(shared.port) as s:
        s.sendall(data)
        reader = Reader(s)
        assert reader.response().headers["x-target"] == "/1"
        last = reader.response()
        assert last.headers["x-target"] == "/2"
        assert last.headers["connection"] == "close"
        assert reader.closed()


def test_http10_is_persistent_only_with_keep_alive(shared):
    with connect(shared.port) as s:
        s.sendall(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                  b"GET /b HTTP/1.0\r\n\r\nGET /c HTTP/1.0\r\n\r\n")
        reader = Reader(s)
        first = reader.response()
        assert first.headers["connection"] == "keep-alive"
        assert reader.response().headers["x-target"] == "/b"
        assert reader.closed()


def test_head_has_the_headers_of_get_and_no_body(shared):
    with connect(shared.port) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\nHEAD /x HTTP/1.1\r\nHost: h\r\n\r\n"
                  + get(path="/y"))
        reader = Reader(s)
        full = reader.response()
        head = reader.response(head_request=True)
        assert head.headers["content-length"] == full.headers["content-length"]
        assert head.headers["server"] == "tailfast" and "date" in head.headers
        assert reader.response().headers["x-target"] == "/y"  # no stray body between


REQUEST = (b"POST /split?q=1 HTTP/1.1\r\nHost: h\r\nX-A: b\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4;e=v\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n")


def test_a_request_split_at_every_byte_boundary_parses_the_same(shared):
    with connect(shared.port) as s:
        reader = Reader(s)
        for cut in range(1, len(REQUEST)):
            s.sendall(REQUEST[:cut])
            time.sleep(0.002)  # the two pieces arrive in separate reads
            s.sendall(REQUEST[cut:])
            response = reader.response()
            assert response.status == 200, cut
            assert response.body == b"wikipedia", cut
            assert response.headers["x-target"] == "/split?q=1"
            assert response.headers["x-header-count"] == "3"


def test_a_request_sent_one_byte_at_a_time(shared):
    with connect(shared.port) as s:
        for i in range(len(REQUEST)):
            s.send(REQUEST[i:i + 1])
            time.sleep(0.001)  # each byte in a read of its own: what is tested
        response = Reader(s).response()
        assert (response.status, response.body) == (200, b"wikipedia")


def test_a_body_cut_short_never_reaches_the_handler(shared):
    before = handler_calls(shared.port)
    for data in (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc",
                 b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"):
        with connect(shared.port) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            assert Reader(s).closed()  # closed without an answer
    assert handler_calls(shared.port) == before + 1


# ----------------------------------------------------------------- memory bound


def _stream_until_answered(port: int, first: bytes, filler: bytes, most: int) -> bytes:
    """Sends first, then filler repeatedly (up to most bytes) until the server
    answers; returns what it answered."""
    with connect(port) as s:
        s.sendall(first)
        s.setblocking(False)
        sent = len(first)
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                answer += s.recv(65536)
                if answer.endswith(b"\n") and b"\r\n\r\n" in answer:
                    break
            except BlockingIOError:
                pass
            if sent < most:
                try:
                    sent += s.send(filler)
                except BlockingIOError:
                    time.sleep(0.001)  # the server is not reading: let it catch up
                except (BrokenPipeError, ConnectionResetError):
                    sent = most
            else:
                time.sleep(0.005)  # all sent: wait for the answer
        return answer


def test_endless_heads_are_refused_and_memory_stays_bounded(shared):
    pid = worker_pid(shared)
    before = rss_kib(pid)
    cases = [
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Endless: ", b"v" * 65536, 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\n", b"X-Many: v\r\n" * 4096, 431),
        (b"GET /", b"a" * 65536, 414),
        (b"\r\n", b"\r\n" * 32768, 414),  # empty lines before the request line count too
    ]
    for first, filler, status in cases:
        answer = _stream_until_answered(shared.port, first, filler, 64 << 20)
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:100]
    grown = rss_kib(pid) - before
    assert grown < 8 * 1024, f"worker RSS grew by {grown} KiB"


# --------------------------------------------------------------------- timeouts


def test_slowloris_head_gets_408_at_the_header_timeout(own):
    server = own("--header-timeout", "0.6", "--request-timeout", "30")
    with connect(server.port) as s:
        start_time = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n")
        s.setblocking(False)
        answer = b""
        # one byte every 50 ms: a timer reset by each read would never fire
        while time.monotonic() - start_time < 5 and b"\r\n\r\n" not in answer:
            try:
                s.send(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)  # the slow client: what is tested
            try:
                answer += s.recv(4096)
            except BlockingIOError:
                pass
        elapsed = time.monotonic() - start_time
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.55 <= elapsed < 2.5, elapsed


def test_idle_new_connection_is_closed_at_the_header_timeout(own):
    server = own("--header-timeout", "0.5")
    with connect(server.port) as s:
        start_time = time.monotonic()
        assert Reader(s).closed()  # no bytes sent: closed without a 408
        assert 0.45 <= time.monotonic() - start_time < 2.5


def test_stalled_body_gets_408_but_a_slow_body_does_not(own):
    server = own("--body-timeout", "0.5", "--header-timeout", "5", "--request-timeout", "30")
    with connect(server.port) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\n")
        for piece in (b"ab", b"cd", b"ef", b"gh"):  # 1.2 s in all, 0.3 s apart
            time.sleep(0.3)
            s.sendall(piece)
        response = Reader(s).response()
        assert (response.status, response.body) == (200, b"abcdefgh")
    with connect(server.port) as s:
        start_time = time.monotonic()
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\nabc")
        reader = Reader(s)
        assert reader.response().status == 408
        assert 0.45 <= time.monotonic() - start_time < 2.5
        assert reader.closed()


def test_request_timeout_bounds_a_body_that_keeps_moving(own):
    server = own("--body-timeout", "5", "--request-timeout", "0.8")
    with connect(server.port) as s:
        start_time = time.monotonic()
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
        s.setblocking(False)
        answer = b""
        while time.monotonic() - start_time < 5 and b"\r\n\r\n" not in answer:
            try:
                s.send(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.05)  # a body that keeps moving, slowly: what is tested
            try:
                answer += s.recv(4096)
            except BlockingIOError:
                pass
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert 0.75 <= time.monotonic() - start_time < 3


def test_keep_alive_idle_connection_is_closed_after_the_timeout(own):
    server = own("--keepalive-timeout", "0.6")
    with connect(server.port) as s:
        reader = Reader(s)
        for _ in range(4):  # used every 0.3 s: stays open past the timeout
            s.sendall(get())
            assert reader.response().status == 200
            time.sleep(0.3)
        idle_since = time.monotonic()
        assert reader.closed()
        assert 0.25 <= time.monotonic() - idle_since < 2.5


# ------------------------------------------------------------- connection cap


def test_clients_beyond_the_connection_cap_wait_instead_of_failing(own):
    server = own("--max-connections", "2", "--keepalive-timeout", "30")
    held = [connect(server.port), connect(server.port)]
    try:
        for s in held:
            s.sendall(get())
            assert Reader(s).response().status == 200
        with connect(server.port) as third:
            third.sendall(get(path="/third"))  # queued by the kernel, not accepted
            third.settimeout(0.5)
            with pytest.raises(TimeoutError):
                third.recv(100)
            held.pop().close()  # a slot frees: the third is accepted and served
            third.settimeout(5)
            response = Reader(third).response()
            assert response.headers["x-target"] == "/third"
    finally:
        for s in held:
            s.close()


def test_settings_reach_the_worker_through_the_environment():
    server = Server(["protoapp:app", "--bind", "127.0.0.1:0", "--workers", "1"],
                    env={"TAILFAST_LIMIT_REQUEST_LINE": "64",
                         "TAILFAST_LIMIT_REQUEST_FIELDS": "2"}).wait_listening()
    try:
        assert one_exchange(server.port, b"GET /" + b"a" * 60 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
                            )[0].status == 414
        assert one_exchange(server.port, get(extra="Connection: close\r\n"))[0].status == 200
        assert one_exchange(server.port, get(extra="A: 1\r\nB: 2\r\n"))[0].status == 431
    finally:
        stop(server)


def test_no_worker_died_during_these_tests(shared):
    assert pid_alive(worker_pid(shared))
    assert "exited" not in shared.output and "killed" not in shared.output
