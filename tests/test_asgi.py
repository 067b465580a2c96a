"""ASGI 3 (HTTP, lifespan) and native async def handlers on the worker's event loop (issue 14)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable

from conftest import ResponseReader, connect, http_request, read_response


class _Async(threading.Thread):
    """One call on a thread of its own; .result is its value or its exception."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: object = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.call()
        except Exception as exc:  # noqa: BLE001 - a failure is a result to assert on
            self.result = exc


def _in_flight(snapshot: dict, n: int) -> bool:
    return sum(p.get("in_flight", 0) for p in snapshot["processes"]) >= n


def _asgi(run_server, app: str = "asgiapps:app", *extra: str, workers: str = "1"):
    return run_server(app, "--bind", ":0", "--workers", workers, *extra)


def test_scope_contents(run_server):
    server = _asgi(run_server, "asgiapps:app", "--script-name", "/mount")
    status, headers, body = http_request(server.port, "GET", "/mount/scope%20x/../scope?a=1&b=%20",
                                         headers={"X-Mixed-Case": "Value"})
    assert status == 404  # the app routes on the decoded path, which is not /scope
    status, headers, body = http_request(server.port, "GET", "/scope?a=1&b=%20",
                                         headers={"X-Mixed-Case": "Value"})
    assert status == 200, body
    scope = json.loads(body)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope" and scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["root_path"] == "/mount"
    assert ["x-mixed-case", "Value"] in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["state"]["greeting"] == "hello from lifespan"


def test_percent_decoded_path_and_raw_path(run_server):
    server = _asgi(run_server)
    with connect(server.port) as s:
        s.sendall(b"GET /sc%6fpe HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_response(s)
    assert response.status == 200
    scope = json.loads(response.body)
    assert scope["path"] == "/scope" and scope["raw_path"] == "/sc%6fpe"


def test_request_body_and_http_10(run_server):
    server = _asgi(run_server)
    status, _, body = http_request(server.port, "POST", "/echo", body=b"x" * 100_000)
    assert (status, body) == (200, b"x" * 100_000)
    with connect(server.port) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")
        assert read_response(s).body == b"hello"
    with connect(server.port) as s:
        s.sendall(b"GET /stream?3 HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"chunk 0\nchunk 1\nchunk 2\n")


def test_streamed_response_keeps_the_connection(run_server):
    server = _asgi(run_server)
    with connect(server.port) as s:
        for _ in range(3):
            s.sendall(b"GET /stream?4 HTTP/1.1\r\nHost: x\r\n\r\n")
            response = read_response(s)
            assert response.status == 200
            assert response.body == b"".join(b"chunk %d\n" % i for i in range(4))


def test_large_streamed_response_with_backpressure(run_server):
    """16 MiB streamed to a client that reads nothing for a while: send()
    waits (the request stays in flight), other requests are answered
    meanwhile, and the whole body arrives later."""
    server = _asgi(run_server)
    with socket.socket() as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: the window
        slow.settimeout(10)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(b"GET /big?4194304 HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_state(lambda s: _in_flight(s, 1), "the big response waiting for its reader")
        for _ in range(5):
            assert http_request(server.port, "GET", "/sleep?0")[0] == 200
        response = read_response(slow)
    assert response.status == 200 and response.body == b"x" * (16 * 1048576)


def test_head_keeps_the_apps_content_length(run_server):
    server = _asgi(run_server)
    with connect(server.port) as s:
        s.sendall(b"HEAD /head HTTP/1.1\r\nHost: x\r\n\r\nGET /head HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = ResponseReader(s)
        head = reader.response(head_request=True)
        get = reader.response()
    assert head.status == 200 and head.headers["content-length"] == "5"
    assert head.body == b"" and get.body == b"12345"


def test_errors_before_and_after_start(run_server):
    server = _asgi(run_server)
    assert http_request(server.port, "GET", "/error-before")[0] == 500
    server.wait_for("boom before start")
    assert http_request(server.port, "GET", "/no-response")[0] == 500
    with connect(server.port) as s:
        s.sendall(b"GET /error-after HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk  # the connection is cut: no last chunk
    assert data.startswith(b"HTTP/1.1 200") and b"partial" in data
    assert not data.endswith(b"0\r\n\r\n")
    server.wait_for("boom after start")
    assert http_request(server.port, "GET", "/sleep?0")[0] == 200  # the worker keeps serving


def test_disconnect_when_the_client_leaves(run_server):
    server = _asgi(run_server)
    s = connect(server.port)
    s.sendall(b"GET /disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
    server.wait_state(lambda snap: _in_flight(snap, 1), "the request waiting for a disconnect")
    s.close()
    server.wait_state(lambda snap: not _in_flight(snap, 1), "the disconnect seen")
    with connect(server.port) as c:
        c.sendall(b"GET /after-response HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c).body == b"done"
        c.sendall(b"GET /seen HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = json.loads(read_response(c).body)
    assert seen == ["http.disconnect", "after:http.request:http.disconnect"]


def test_lifespan_shutdown_runs_at_stop(run_server):
    server = _asgi(run_server)
    assert http_request(server.port, "GET", "/scope")[0] == 200
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert "lifespan shutdown in" in "\n".join(server.stdout_lines)


def test_failed_startup_fails_the_start(run_server):
    server = run_server("asgiapps:app", "--bind", ":0", "--workers", "1",
                        env={"ASGI_FAIL_STARTUP": "1"}, wait=False)
    assert server.wait(20) != 0
    assert "lifespan startup failed: no database" in server.output
    assert "cannot start; stopping" in server.output


def test_app_without_lifespan_carries_on(run_server):
    server = _asgi(run_server, "asgiapps:no_lifespan")
    assert http_request(server.port)[2] == b"no lifespan here"
    server = _asgi(run_server, "asgiapps:callable_app")  # auto-detected: __call__ is async
    assert http_request(server.port)[2] == b"callable object"


def test_state_is_a_copy_per_request(run_server):
    server = _asgi(run_server, "stateapp:app")
    for _ in range(3):
        status, _, body = http_request(server.port, "GET", "/")
        assert status == 200 and json.loads(body) == {"shared": 1, "seen": None}


def test_native_async_handler(run_server):
    server = run_server("asgiapps:handler", "--bind", ":0", "--workers", "1")
    assert http_request(server.port, "GET", "/")[2] == b"async hello"
    status, headers, body = http_request(server.port, "GET", "/tuple")
    assert (status, headers["x-kind"], body) == (201, "tuple", b"created")
    status, _, body = http_request(server.port, "POST", "/json", body=b'{"a": [1, 2]}')
    assert json.loads(body) == {"a": [1, 2]}
    assert json.loads(http_request(server.port, "GET", "/sleep?s=0.01")[2])["slept"] is True
    assert http_request(server.port, "GET", "/stream")[2] == b"part 0\npart 1\npart 2\n"
    assert http_request(server.port, "GET", "/error")[0] == 500
    server.wait_for("async boom")


def test_many_requests_wait_at_once(run_server):
    """64 requests each awaiting 0.5 s on one worker finish together."""
    server = run_server("asgiapps:handler", "--bind", ":0", "--workers", "1")
    start = time.monotonic()
    calls = [_Async(lambda: http_request(server.port, "GET", "/sleep?s=0.5", timeout=20)[0])
             for _ in range(64)]
    for c in calls:
        c.join(30)
    elapsed = time.monotonic() - start
    assert [c.result for c in calls] == [200] * 64
    assert elapsed < 5, elapsed  # serially it would take 32 s


def test_asgi_concurrency(run_server):
    server = _asgi(run_server)
    calls = [_Async(lambda: http_request(server.port, "GET", "/sleep?0.5", timeout=20)[0])
             for _ in range(32)]
    server.wait_state(lambda s: _in_flight(s, 16), "many requests in flight at once")
    for c in calls:
        c.join(30)
    assert [c.result for c in calls] == [200] * 32


def _stop_with_requests_in_flight(run_server, app: str, path: str, sig: int) -> None:
    server = run_server(app, "--bind", ":0", "--workers", "1")
    old = server.wait_ready()["processes"][0]["pid"]
    calls = [_Async(lambda: http_request(server.port, "GET", path, timeout=20)[0])
             for _ in range(8)]
    server.wait_state(lambda s: _in_flight(s, 8), "8 requests in flight")
    server.signal(sig)
    for c in calls:
        c.join(20)
    assert [c.result for c in calls] == [200] * 8
    if sig == signal.SIGHUP:
        server.wait_replaced(1, old)
        assert http_request(server.port, "GET", path)[0] == 200
    else:
        assert server.wait(15) == 0


def test_graceful_stop_with_async_requests_in_flight(run_server):
    _stop_with_requests_in_flight(run_server, "asgiapps:app", "/sleep?1", signal.SIGTERM)


def test_sighup_with_async_requests_in_flight(run_server):
    _stop_with_requests_in_flight(run_server, "asgiapps:handler", "/sleep?s=1", signal.SIGHUP)


def test_timeout_cancels_the_coroutine(run_server):
    for app in ("asgiapps:app", "asgiapps:handler"):
        server = run_server(app, "--bind", ":0", "--workers", "1", "--timeout", "1",
                            "--timeout-grace", "5")
        pid = server.wait_ready()["processes"][0]["pid"]
        start = time.monotonic()
        status, _, body = http_request(server.port, "GET", "/forever", timeout=15)
        assert status == 503 and time.monotonic() - start < 4, (status, body)
        server.wait_for("ran past --timeout 1 s; cancelling it")
        assert server.wait_ready()["processes"][0]["pid"] == pid  # the worker lives on
        assert http_request(server.port, "GET", "/sleep")[0] == 200
        server.stop()


def test_asyncio_loop_option(run_server):
    server = _asgi(run_server, "asgiapps:app", "--loop", "asyncio")
    assert http_request(server.port, "GET", "/sleep?0.01")[2] == b"slept"


def test_context_variables_stay_with_their_request(run_server):
    server = _asgi(run_server, "asgiapps:context_app")
    for path in ("/?a", "/wait?b", "/?c", "/wait?d"):
        expected = f"unset {path.split('?')[1]}".encode()
        assert http_request(server.port, "GET", path)[2] == expected


def test_large_body_streams_into_receive(run_server):
    """A body above the C window arrives in several http.request events."""
    server = _asgi(run_server, "asgiapps:app")
    body = bytes(range(256)) * 8192  # 2 MiB
    status, _, answer = http_request(server.port, "POST", "/echo", body=body)
    assert (status, answer) == (200, body)
    with connect(server.port) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(64):
            s.sendall(b"4000\r\n" + b"y" * 0x4000 + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        assert read_response(s).body == b"y" * (64 * 0x4000)


def test_loop_stall_is_named_by_the_watchdog(run_server):
    server = _asgi(run_server, "asgiapps:app", "--loop-stall-warning", "0.5")
    assert http_request(server.port, "GET", "/block", timeout=10)[2] == b"blocked"
    server.wait_for(r"time\.sleep\(1\.2\)")
    assert "asgiapps.py" in server.output


def test_a_plain_coroutine_has_what_asyncio_tasks_offer(run_server):
    """A raw ASGI app is driven without an asyncio.Task, yet current_task(),
    asyncio.timeout(), TaskGroup, cancel()/uncancel() and a bare yield work in
    it, in its first step and after it suspended; the worker goes on serving."""
    server = _asgi(run_server)
    for _ in range(2):
        status, _, body = http_request(server.port, "GET", "/task-api")
        assert status == 200, body
        assert json.loads(body) == {
            "first_step_task": True, "first_step_timeout": True, "task": True,
            "timeout": True, "cancelling_after_timeout": 0, "task_group": [1, 2],
            "uncancel": 0}
    assert http_request(server.port, "GET", "/sleep?0")[0] == 200
