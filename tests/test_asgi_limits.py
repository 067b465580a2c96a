"""ASGI and async handlers at their limits: stalled uploads and readers, overruns, bad messages."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

import pytest
from conftest import connect, http_request, read_response


def _seen(port: int) -> list[str]:
    status, _, body = http_request(port, "GET", "/seen")
    assert status == 200, body
    return json.loads(body)


def _wait_seen(port: int, prefix: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [s for s in _seen(port) if s.startswith(prefix)]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"{prefix!r} not seen: {_seen(port)}")


def _read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _stalled_upload(port: int, path: str, sent: int = 300 * 1024) -> socket.socket:
    """A head announcing 4 MiB, sent bytes of it, then nothing."""
    s = connect(port)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {4 << 20}\r\n\r\n".encode()
              + b"u" * sent)
    return s


def test_a_stalled_upload_gets_408_after_body_timeout(run_server):
    server = run_server("limitapps:app", "--bind", ":0", "--workers", "1", "--body-timeout", "1",
                        "--timeout", "30")
    pid = server.wait_ready()["processes"][0]["pid"]
    with _stalled_upload(server.port, "/upload") as s:
        start = time.monotonic()
        assert http_request(server.port, "GET", "/hello")[2] == b"hello"  # served meanwhile
        data = _read_until_closed(s)
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"connection: close" in data.lower()
    assert 0.9 <= elapsed < 5, elapsed
    seen = _wait_seen(server.port, "upload:")
    # the app's receive() returned http.disconnect, and its send() then raised
    assert seen.startswith("upload:disconnect:") and seen.endswith(":ClientDisconnected"), seen
    assert int(seen.split(":")[2]) > 0
    server.wait_for("no request body bytes for --body-timeout 1 s; answered 408")
    assert server.wait_ready()["processes"][0]["pid"] == pid


def test_a_stalled_upload_after_the_answer_started_is_cut(run_server):
    server = run_server("limitapps:app", "--bind", ":0", "--workers", "1", "--body-timeout", "1")
    with _stalled_upload(server.port, "/upload-streaming") as s:
        data = _read_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200") and b"started" in data
    assert not data.endswith(b"0\r\n\r\n")  # cut: no last chunk
    assert _wait_seen(server.port, "upload-streaming:") == "upload-streaming:http.disconnect"
    assert http_request(server.port, "GET", "/hello")[2] == b"hello"


def _stalled_request(run_server, target: str) -> tuple[Any, socket.socket, float]:
    """A server with --request-timeout 2 and a client that sent GET target and
    reads nothing (a small receive buffer); when it sent it."""
    server = run_server("limitapps:app", "--bind", ":0", "--workers", "1",
                        "--request-timeout", "2", "--timeout", "60")
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return server, stalled, time.monotonic()


def test_a_reader_that_stalls_a_streamed_answer_is_dropped_at_request_timeout(run_server):
    server, stalled, start = _stalled_request(run_server, "/endless")
    pid = server.wait_ready()["processes"][0]["pid"]
    try:
        server.wait_state(lambda s: s["processes"][0]["open"] >= 1, "the stalled connection")
        for _ in range(5):  # the worker serves others meanwhile
            t0 = time.monotonic()
            assert http_request(server.port, "GET", "/hello")[2] == b"hello"
            assert time.monotonic() - t0 < 0.5
        # the app's send() raised ClientDisconnected at --request-timeout, well before --timeout
        assert _wait_seen(server.port, "endless:", timeout=15) == "endless:ClientDisconnected"
        assert time.monotonic() - start < 8
        stalled.settimeout(10)
        total = 0
        try:
            while chunk := stalled.recv(1 << 20):  # what was queued, then the close
                total += len(chunk)
        except ConnectionResetError:
            pass
        assert total < 64 * 1024 * 1024
        assert time.monotonic() - start < 12
    finally:
        stalled.close()
    server.wait_for("read nothing for --request-timeout 2 s; closing the connection")
    assert server.wait_ready()["processes"][0]["pid"] == pid


def test_a_stream_sent_from_a_task_beside_receive_arrives_whole(run_server):
    # the coroutine's first step awaits receive(); the task it started sends
    # meanwhile and waits for the client on the same waiter
    server = run_server("limitapps:app", "--bind", ":0", "--workers", "1")
    status, _, body = http_request(server.port, "GET", "/stream-and-listen?64", timeout=20)
    assert status == 200 and body == b"y" * (64 << 16)
    assert not any(s.startswith("stream-and-listen:send:") for s in _seen(server.port))


def test_an_app_awaiting_receive_hears_of_a_stalled_reader_at_request_timeout(run_server):
    server, stalled, start = _stalled_request(run_server, "/stream-and-listen")
    try:
        seen = _wait_seen(server.port, "stream-and-listen:receive:", timeout=10)
    finally:
        stalled.close()
    # receive() returned http.disconnect when the connection was cut (the
    # app's clock: CLOCK_MONOTONIC, as this process's), and its send() raised
    kind, at = seen.split(":")[2:]
    assert kind == "http.disconnect", seen
    assert 2 - 0.1 <= float(at) - start <= 3, float(at) - start
    assert _wait_seen(server.port, "stream-and-listen:send:") == \
        "stream-and-listen:send:ClientDisconnected"


def test_streamed_uploads_share_the_workers_input_cap(run_server):
    # small heads: the cap is 32 x (2 x (258 + 20 x 258 + 2) + the 256 KiB
    # window) = 8,735,488 bytes, and each streamed upload's window takes
    # about 254 KiB of it from its dispatch on: 34 fit, the others get 503
    server = run_server("limitapps:app", "--bind", ":0", "--workers", "1",
                        "--limit-request-line", "256", "--limit-request-fields", "20",
                        "--limit-request-field-size", "256")
    size = 512 * 1024
    head = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    socks = []
    try:
        for _ in range(40):  # 40 uploads at once, their bodies still to come
            socks.append(connect(server.port))
            socks[-1].sendall(head)
        server.wait_for(r"input buffers at the cap \(8735488 bytes\); 503", timeout=5)
        assert http_request(server.port, "GET", "/hello")[2] == b"hello"  # serving meanwhile
        for s in socks:  # the bodies: the app reads each as it arrives
            try:
                s.sendall(b"u" * size)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered 503 and closed already
        answers = [read_response(s) for s in socks]
    finally:
        for s in socks:
            s.close()
    served = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 503]
    assert all(a.body == b"524288" for a in served)
    assert all(a.headers["connection"] == "close" for a in refused)
    assert len(served) >= 32 and refused and len(served) + len(refused) == 40, \
        [a.status for a in answers]
    # the room comes back once those connections are gone
    status, _, body = http_request(server.port, "POST", "/upload", body=b"v" * size)
    assert (status, body) == (200, b"524288")


@pytest.mark.parametrize("path", ["/block", "/block-later"])
@pytest.mark.parametrize("app", ["limitapps:app", "limitapps:handler"])
def test_an_overrun_in_a_blocking_step_answers_503(run_server, app, path):
    """The primary's signal in an eager step (/block) or a Task's (/block-later)."""
    server = run_server(app, "--bind", ":0", "--workers", "1", "--timeout", "1",
                        "--timeout-grace", "10")
    pid = server.wait_ready()["processes"][0]["pid"]
    status, _, body = http_request(server.port, "GET", path, timeout=15)
    assert status == 503, (status, body)
    server.wait_for("timed out after")
    assert "error in ASGI application" not in server.output
    assert server.wait_ready()["processes"][0]["pid"] == pid
    assert http_request(server.port, "GET", "/hello")[0] == 200


def test_an_async_handler_awaits_a_large_body(run_server):
    server = run_server("limitapps:handler", "--bind", ":0", "--workers", "1")
    body = bytes(range(256)) * 4096  # 1 MiB: streamed
    expected = f"{len(body)} {sum(body) % 997}".encode()
    assert http_request(server.port, "POST", "/read", body=body)[::2] == (200, expected)
    # half the body, then another request is served while the first one waits
    with connect(server.port) as s:
        s.sendall(f"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                  .encode() + body[: len(body) // 2])
        t0 = time.monotonic()
        assert http_request(server.port, "GET", "/hello")[2] == b"hello"
        assert time.monotonic() - t0 < 0.5
        s.sendall(body[len(body) // 2:])
        response = read_response(s)
    assert (response.status, response.body) == (200, expected)
    # a small body needs no await
    assert http_request(server.port, "POST", "/read", body=b"abc")[2] == b"3 294"


@pytest.mark.parametrize("path", ["/body", "/stream"])
def test_a_blocking_read_of_a_large_body_in_an_async_handler_is_refused(run_server, path):
    server = run_server("limitapps:handler", "--bind", ":0", "--workers", "1")
    status, _, _ = http_request(server.port, "POST", path, body=b"z" * (1 << 20))
    assert status == 500
    server.wait_for(re.escape("use `body = await request.read()`"))
    assert http_request(server.port, "POST", path, body=b"small")[2] == b"5"


def test_an_async_handler_whose_upload_stalls_gets_408(run_server):
    server = run_server("limitapps:handler", "--bind", ":0", "--workers", "1",
                        "--body-timeout", "1")
    with _stalled_upload(server.port, "/read") as s:
        assert http_request(server.port, "GET", "/hello")[2] == b"hello"
        data = _read_until_closed(s)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]


@pytest.mark.parametrize(("path", "message"), [
    ("/wrong-type", "unexpected ASGI message 'http.response.nonsense'"),
    ("/start-twice", "http.response.start sent twice"),
    ("/body-before-start", "http.response.body sent before http.response.start"),
    ("/str-headers", "ASGI header names and values must be bytes"),
    ("/bad-status", "invalid ASGI response status '200'"),
    ("/bad-length", "invalid Content-Length"),
])
def test_invalid_messages_before_the_answer_get_500(run_server, path, message):
    server = run_server("limitapps:app", "--bind", ":0", "--workers", "1")
    pid = server.wait_ready()["processes"][0]["pid"]
    assert http_request(server.port, "GET", path)[0] == 500
    server.wait_for(re.escape(message))
    assert http_request(server.port, "GET", "/hello")[2] == b"hello"
    assert server.wait_ready()["processes"][0]["pid"] == pid


def test_invalid_messages_after_the_answer(run_server):
    server = run_server("limitapps:app", "--bind", ":0", "--workers", "1")
    with connect(server.port) as s:  # complete already: the answer stands, the error is logged
        s.sendall(b"GET /after-complete HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s).body == b"complete"
    server.wait_for("http.response.body sent after the response was complete")
    with connect(server.port) as s:  # mid-stream: cut
        s.sendall(b"GET /invalid-mid-stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200") and b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")
    server.wait_for("http.response.start sent twice")
    assert http_request(server.port, "GET", "/hello")[2] == b"hello"
