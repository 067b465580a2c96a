"""Request bodies stream to the app: memory, chunked, 100-continue, refusals, failures.

Real servers (tests/apps/uploadapp.py) on 127.0.0.1, real sockets. The window
of unread body a worker holds per connection is 256 KiB (csrc/tailfast.h).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tailfast.testing import ResponseReader, Server, connect

WINDOW = 256 * 1024


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def payload(size: int) -> bytes:
    """size bytes that are not one repeated block (a wrong offset shows in the hash)."""
    block = os.urandom(1 << 20)
    return (block * (size // len(block) + 1))[:size]


def expected(data: bytes) -> bytes:
    return b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())


def post_head(size: int, path: str = "/", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n%s\r\n" % (
        path.encode(), size, extra)


def chunked(data: bytes, piece: int) -> bytes:
    out = [b"%x\r\n%s\r\n" % (len(data[i:i + piece]), data[i:i + piece])
           for i in range(0, len(data), piece)]
    return b"".join(out) + b"0\r\n\r\n"


def upload(port: int, data: bytes, path: str = "/", timeout: float = 30.0):
    """One Content-Length upload on a new connection; the response."""
    with connect(port, timeout=timeout) as s:
        s.sendall(post_head(len(data), path) + data)
        return ResponseReader(s).response()


def worker_pid(server: Server) -> int:
    (pid,) = server.live_workers().values()
    return pid


@pytest.fixture
def wsgi(run_server) -> Server:
    return run_server("uploadapp:wsgi_hash", "--bind", "127.0.0.1:0", "--workers", "1",
                      "--limit-request-body", "0")


# ------------------------------------------------------------------ memory


def test_a_wsgi_upload_is_read_in_bounded_memory(wsgi: Server) -> None:
    pid = worker_pid(wsgi)
    warm = payload(4 << 20)
    assert upload(wsgi.port, warm).body == expected(warm)  # imports and pools settle
    idle = vm_kib(pid, "VmRSS")
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM restarts from the current RSS
    data = payload(64 << 20)
    response = upload(wsgi.port, data, timeout=60)
    assert (response.status, response.body) == (200, expected(data))
    peak = vm_kib(pid, "VmHWM")
    assert peak <= idle + 4 * 1024, f"peak RSS {peak} KiB, idle {idle} KiB: the body was held"


# ------------------------------------------------------- the native stream


@pytest.mark.parametrize("threads", ["1", "4"])
def test_native_stream_and_body(run_server, threads: str) -> None:
    native = run_server("uploadapp:native_hash", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--limit-request-body", "0", "--threads", threads)
    data = payload(8 << 20)
    assert upload(native.port, data).body == expected(data)
    assert upload(native.port, data, "/body").body == expected(data)
    small = b"x" * 1000  # arrives with its head: the whole-body path
    assert upload(native.port, small).body == expected(small)
    assert upload(native.port, small, "/body").body == expected(small)


@pytest.mark.parametrize("app", ["uploadapp:wsgi_hash", "uploadapp:native_hash"])
def test_chunked_uploads_are_decoded_on_the_way(run_server, app: str) -> None:
    server = run_server(app, "--bind", "127.0.0.1:0", "--workers", "1",
                        "--limit-request-body", "0")
    data = payload(6 << 20)
    with connect(server.port, timeout=30) as s:
        reader = ResponseReader(s)
        for piece in (1, 1000, 65536, 300000):
            part = data if piece > 1 else data[:5000]
            s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + chunked(part, piece))
            response = reader.response()
            assert (response.status, response.body) == (200, expected(part)), piece


def test_wsgi_input_lines_and_read_all(wsgi: Server) -> None:
    lines = b"".join(b"line %d\n" % i for i in range(100000))  # ~1 MB, past the window
    assert upload(wsgi.port, lines, "/lines").body == b"lines 100000\n"
    assert upload(wsgi.port, lines + b"tail", "/lines").body == b"lines 100001\n"
    data = payload(3 << 20)
    assert upload(wsgi.port, data, "/all").body == expected(data)


def test_a_chunked_body_past_the_limit_is_413_and_closes(run_server) -> None:
    server = run_server("uploadapp:wsgi_hash", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--limit-request-body", "1m")
    data = payload(3 << 20)
    with connect(server.port, timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        sender = threading.Thread(target=_send_ignoring_errors, args=(s, chunked(data, 65536)))
        sender.start()
        reader = ResponseReader(s)
        response = reader.response()
        sender.join(10)
        assert response.status == 413
        assert reader.closed()
    small = b"y" * 5000
    assert upload(server.port, small).body == expected(small)


def _send_ignoring_errors(s: socket.socket, data: bytes) -> None:
    try:
        s.sendall(data)
    except OSError:
        pass  # the server answered and closed first


# ------------------------------------------------------------ 100-continue


def test_100_continue_waits_for_the_first_read(run_server, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = run_server("uploadapp:gated", "--bind", "127.0.0.1:0", "--workers", "1",
                        env={"UPLOAD_GATE": str(gate)})
    data = payload(1 << 20)
    with connect(server.port, timeout=10) as s:
        s.sendall(post_head(len(data), extra=b"Expect: 100-continue\r\n"))
        server.wait_busy("POST", "/")  # the handler runs; it has not read yet
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(100)  # no 100 Continue before the application reads
        s.settimeout(10)
        gate.write_text("go")  # the handler now reads the body
        reader = ResponseReader(s)
        assert reader.response().status == 100
        s.sendall(data)
        response = reader.response()
        assert (response.status, response.body) == (200, expected(data))


@pytest.mark.parametrize("threads", ["1", "4"])
def test_a_refusal_without_reading_never_asks_for_the_body(run_server, threads: str) -> None:
    server = run_server("uploadapp:wsgi_hash", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--threads", threads)
    with connect(server.port, timeout=10) as s:
        s.sendall(post_head(5 << 20, "/refuse", b"Expect: 100-continue\r\n"))
        reader = ResponseReader(s)
        response = reader.response()
        assert response.status == 401  # no 100 Continue before it
        # the client never sent the body: only closing keeps the framing honest
        assert response.headers.get("connection") == "close"
        assert reader.closed()


def test_an_unread_small_body_is_drained_for_keep_alive(wsgi: Server) -> None:
    data = payload(600 * 1024)  # streamed (past the window), within the drain limit
    with connect(wsgi.port, timeout=10) as s:
        reader = ResponseReader(s)
        s.sendall(post_head(len(data), "/refuse") + data)
        assert reader.response().status == 401
        s.sendall(post_head(len(data), "/partial") + data)
        assert reader.response().body == b"partial 1000\n"
        # the next request on the same connection is framed right
        s.sendall(post_head(len(data)) + data + post_head(5) + b"hello")
        assert reader.response().body == expected(data)
        assert reader.response().body == expected(b"hello")


def test_an_unread_large_body_closes_after_the_answer(wsgi: Server) -> None:
    data = payload(8 << 20)  # past the drain limit
    with connect(wsgi.port, timeout=10) as s:
        sender = threading.Thread(target=_send_ignoring_errors,
                                  args=(s, post_head(len(data), "/refuse") + data))
        sender.start()
        reader = ResponseReader(s)
        response = reader.response()
        assert response.status == 401
        assert response.headers.get("connection") == "close"
        assert reader.closed()
        sender.join(10)
    assert upload(wsgi.port, b"abc").body == expected(b"abc")


# ------------------------------------------------------ clients that fail


@pytest.mark.parametrize("threads", ["1", "4"])
def test_a_client_gone_mid_upload_leaves_the_worker_serving(run_server, threads: str) -> None:
    server = run_server("uploadapp:wsgi_hash", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--threads", threads)
    pid = worker_pid(server)
    with connect(server.port, timeout=10) as s:
        s.sendall(post_head(10 << 20) + payload(1 << 20))
    # closed mid-body: the application's read raises ClientDisconnected
    server.wait_for(r"upload ended early after \d+ bytes")
    data = payload(1 << 20)
    assert upload(server.port, data).body == expected(data)
    assert worker_pid(server) == pid


@pytest.mark.parametrize("threads", ["1", "4"])
def test_body_timeout_while_the_application_waits(run_server, threads: str) -> None:
    server = run_server("uploadapp:wsgi_hash", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--threads", threads, "--body-timeout", "0.5")
    with connect(server.port, timeout=10) as s:
        s.sendall(post_head(1 << 20) + b"x" * 1000)
        started = time.monotonic()
        reader = ResponseReader(s)
        response = reader.response()  # nothing more is sent
        assert response.status == 408
        assert time.monotonic() - started < 5
        assert reader.closed()
    assert upload(server.port, b"abc").body == expected(b"abc")


# ----------------------------------------------------------- concurrency


@pytest.mark.parametrize("threads", ["1", "4"])
def test_16_concurrent_20mb_uploads(run_server, threads: str) -> None:
    server = run_server("uploadapp:wsgi_hash", "--bind", "127.0.0.1:0", "--workers", "2",
                        "--threads", threads, "--limit-request-body", "0")
    data = payload(20 << 20)
    want = expected(data)
    results: list[object] = []

    def one() -> None:
        try:
            results.append(upload(server.port, data, timeout=60).body)
        except Exception as exc:  # reported below
            results.append(exc)

    clients = [threading.Thread(target=one) for _ in range(16)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(120)
    assert results == [want] * 16


def test_after_a_streamed_body_the_connection_idles_as_keep_alive(run_server) -> None:
    server = run_server("uploadapp:wsgi_hash", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--keepalive-timeout", "0.5", "--header-timeout", "30")
    data = payload(1 << 20)
    with connect(server.port, timeout=5) as s:
        reader = ResponseReader(s)
        s.sendall(post_head(len(data)) + data)
        assert reader.response().body == expected(data)
        started = time.monotonic()
        assert reader.closed()  # the keep-alive timeout, not the head's
        assert time.monotonic() - started < 3
