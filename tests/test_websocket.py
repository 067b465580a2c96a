"""WebSocket (RFC 6455) over ASGI on real servers, with the websockets client (issue 14)."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time

import pytest
from conftest import http_request, read_response

websockets = pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def _ws(run_server, *extra: str, app: str = "wsapps:app"):
    return run_server(app, "--bind", ":0", "--workers", "1", *extra)


def _url(server, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def _closed_by_server(ws) -> ConnectionClosed:
    """Waits for the server's close; returns the exception the client saw."""
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=10)
    return info.value


def _wait_closes(server, count: int) -> list[int]:
    """The disconnect codes the app saw, once there are count of them."""
    deadline = time.monotonic() + 10
    while True:
        codes = json.loads(http_request(server.port, "GET", "/closes")[2])
        if len(codes) >= count or time.monotonic() > deadline:
            return codes
        time.sleep(0.01)


def test_echo_text_binary_headers_and_subprotocol(run_server):
    server = _ws(run_server)
    with ws_connect(_url(server, "/echo"), subprotocols=["v0", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response.headers["x-ws"] == "yes"
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\xff" * 10)
        assert ws.recv(timeout=5) == b"\x00\xff" * 10
        ws.send("")
        assert ws.recv(timeout=5) == ""
    with ws_connect(_url(server, "/echo")) as ws:
        assert ws.subprotocol is None
    # the worker still answers HTTP on the same listener
    assert http_request(server.port, "GET", "/")[2] == b"plain http"


def test_large_and_fragmented_messages(run_server):
    server = _ws(run_server)
    with ws_connect(_url(server, "/echo"), max_size=None) as ws:
        big = bytes(range(256)) * 20_000  # 5 MB, both ways
        ws.send(big)
        assert ws.recv(timeout=20) == big
        ws.send(["fra", "gmen", "ted ✓"])  # one text message in three frames
        assert ws.recv(timeout=5) == "fragmented ✓"
        ws.send([b"a" * 70_000, b"b" * 3, b"c" * 200_000])
        assert ws.recv(timeout=5) == b"a" * 70_000 + b"b" * 3 + b"c" * 200_000


def test_ping_is_answered_with_pong(run_server):
    server = _ws(run_server)
    with ws_connect(_url(server, "/echo")) as ws:
        for payload in (b"", b"probe", b"x" * 125):
            assert ws.ping(payload).wait(5)
        ws.send("after pings")
        assert ws.recv(timeout=5) == "after pings"


def test_close_codes_both_ways(run_server):
    server = _ws(run_server)
    with ws_connect(_url(server, "/close")) as ws:
        ws.send("close me")
        closed = _closed_by_server(ws)
    assert (closed.rcvd.code, closed.rcvd.reason) == (4000, "bye")
    with ws_connect(_url(server, "/echo")) as ws:
        ws.close(code=4001, reason="client leaves")
    assert ws.close_code == 4001  # the server echoed it
    with ws_connect(_url(server, "/echo")) as ws:
        pass
    assert ws.close_code == 1000
    assert _wait_closes(server, 2) == [4001, 1000]


def test_message_over_the_maximum_closes_1009(run_server):
    server = _ws(run_server, "--ws-max-message-size", "1k")
    with ws_connect(_url(server, "/echo")) as ws:
        ws.send("x" * 1024)
        assert ws.recv(timeout=5) == "x" * 1024
        ws.send("x" * 1025)
        closed = _closed_by_server(ws)
    assert closed.rcvd.code == 1009
    with ws_connect(_url(server, "/echo")) as ws:
        with contextlib.suppress(ConnectionClosed):  # the close may come before the 2nd
            ws.send(["x" * 600, "x" * 600])  # fragments within the limit, the message not
        assert _closed_by_server(ws).rcvd.code == 1009


def test_protocol_errors_close_with_the_parsers_code(run_server):
    server = _ws(run_server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
        s.sendall(f"GET /echo HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 101 ")
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in answer
        s.sendall(b"\x81\x05hello")  # an unmasked client frame: 1002
        frame = answer.split(b"\r\n\r\n", 1)[1]
        while len(frame) < 4:
            chunk = s.recv(4096)
            assert chunk
            frame += chunk
        assert frame[0] == 0x88 and int.from_bytes(frame[2:4], "big") == 1002


def test_reject_before_accept_and_bad_handshakes(run_server):
    server = _ws(run_server)
    with pytest.raises(InvalidStatus) as info:
        ws_connect(_url(server, "/reject"))
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        ws_connect(_url(server, "/raise"))
    assert info.value.response.status_code == 500
    status, headers, _ = http_request(server.port, "GET", "/echo",
                                      headers={**UPGRADE, "Sec-WebSocket-Version": "8"})
    assert status == 426 and headers["sec-websocket-version"] == "13"
    status, _, _ = http_request(server.port, "GET", "/echo",
                                headers={**UPGRADE, "Sec-WebSocket-Key": "short"})
    assert status == 400
    with ws_connect(_url(server, "/echo")) as ws:  # the worker goes on
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"


def _upgrade_answer(port: int, path: str, sock: socket.socket | None = None):
    """The HTTP answer to an upgrade request sent by hand (on sock when given)."""
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
    head = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    try:
        return read_response(s)
    finally:
        if sock is None:
            s.close()


_DENIALS = {  # path: the body, and the framing header the answer carries
    "/deny": (b"no token", ("content-length", "8")),
    "/deny-parts": (b"nonono   tokentokentoken", ("transfer-encoding", "chunked")),
    "/deny-large": (b"no" * 65536 + b" " * 65536 + b"token" * 65536,
                    ("transfer-encoding", "chunked")),
}


@pytest.mark.parametrize("path", list(_DENIALS))
def test_denial_response_instead_of_the_accept(run_server, path):
    """The WebSocket Denial Response extension: the app's status, headers and
    body, whole or streamed, and the connection stays an HTTP one (as a 403)."""
    body, framing = _DENIALS[path]
    server = _ws(run_server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        response = _upgrade_answer(server.port, path, s)
        assert response.status == 401
        headers = dict(response.headers)
        assert headers["www-authenticate"] == "Bearer"
        assert headers["content-type"] == "text/plain"
        assert headers[framing[0]] == framing[1]
        assert "sec-websocket-accept" not in headers and "upgrade" not in headers
        assert response.body == body
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s).body == b"plain http"
    with pytest.raises(InvalidStatus) as info:  # what a WebSocket client sees of it
        ws_connect(_url(server, path))
    assert info.value.response.status_code == 401
    assert info.value.response.body == body


def test_a_denial_response_that_goes_wrong_is_a_500(run_server):
    server = _ws(run_server)
    assert _upgrade_answer(server.port, "/deny-then-accept").status == 500
    server.wait_for("error in ASGI application for GET /deny-then-accept")
    response = _upgrade_answer(server.port, "/deny")  # the worker goes on
    assert (response.status, response.body) == (401, b"no token")


def test_websocket_scope(run_server):
    server = _ws(run_server, "--script-name", "/mount")
    with ws_connect(_url(server, "/scope?a=1"), subprotocols=["one", "two"]) as ws:
        scope = json.loads(ws.recv(timeout=5))
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope" and scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1"
    assert scope["root_path"] == "/mount"
    assert scope["subprotocols"] == ["one", "two"]
    assert "method" not in scope
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["state"] == {}
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert ["upgrade", "websocket"] in scope["headers"]


def test_send_backpressure_delivers_everything(run_server):
    server = _ws(run_server)
    with ws_connect(_url(server, "/flood"), max_size=None) as ws:
        ws.send("300 65536")  # about 20 MB, well above the output's high-water mark
        for i in range(300):
            message = ws.recv(timeout=10)
            assert len(message) == 65536 and message[0] == i % 256
            if i % 50 == 0:
                time.sleep(0.05)  # a slow reader: the server's send() waits meanwhile
        assert ws.recv(timeout=10) == "done"


def test_receive_backpressure_stops_reading(run_server):
    """An application that does not receive: the worker stops reading, so the
    client's sends block well before everything is sent; all arrive later."""
    server = _ws(run_server)
    total = 400
    sent = [0]
    with ws_connect(_url(server, "/lazy"), max_size=None) as ws:
        def sender() -> None:
            for _ in range(total):
                ws.send(b"z" * 65536)  # 25 MB in all
                sent[0] += 1
            ws.send("end")
        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        last, stalled = -1, time.monotonic()
        deadline = time.monotonic() + 20
        while time.monotonic() - stalled < 0.5 and time.monotonic() < deadline:
            if sent[0] != last:
                last, stalled = sent[0], time.monotonic()
            time.sleep(0.02)
        assert sent[0] < total, "nothing pushed back"
        assert http_request(server.port, "GET", "/release")[0] == 200
        thread.join(20)
        assert not thread.is_alive()
        assert ws.recv(timeout=20) == str(total)


def test_many_websockets_on_one_worker_are_not_busy_load(run_server):
    server = _ws(run_server)
    count = 200
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(ws_connect(_url(server, "/echo"))) for _ in range(count)]
        for i, ws in enumerate(sockets):
            ws.send(f"m{i}")
        for i, ws in enumerate(sockets):
            assert ws.recv(timeout=10) == f"m{i}"
        snapshot = server.wait_state(
            lambda s: s["processes"][0]["open"] >= count, f"{count} connections open")
        proc = snapshot["processes"][0]
        assert proc["state"] == "idle" and proc["in_flight"] == 0
        # open WebSockets are connections, not requests: HTTP is answered at once
        assert http_request(server.port, "GET", "/")[0] == 200
    assert _wait_closes(server, count) == [1000] * count


def test_open_websocket_outlives_keepalive_and_request_timeouts(run_server):
    server = _ws(run_server, "--keepalive-timeout", "0.3", "--request-timeout", "0.5",
                 "--header-timeout", "0.5")
    with ws_connect(_url(server, "/echo")) as ws:
        time.sleep(1.5)  # three times the longest timeout, with nothing sent
        ws.send("still open")
        assert ws.recv(timeout=5) == "still open"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stop_closes_open_websockets_1001(run_server, sig):
    server = _ws(run_server, "--graceful-timeout", "8")
    pid = server.wait_ready()["processes"][0]["pid"]
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(ws_connect(_url(server, "/echo"))) for _ in range(5)]
        for ws in sockets:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
        start = time.monotonic()
        server.signal(sig)
        for ws in sockets:
            assert _closed_by_server(ws).rcvd.code == 1001
    if sig == signal.SIGTERM:
        assert server.wait(15) == 0
    else:
        server.wait_state(lambda s: all(p["pid"] != pid for p in s["processes"]),
                          "the old worker gone")
        with ws_connect(_url(server, "/echo")) as ws:  # the new worker serves
            ws.send("new")
            assert ws.recv(timeout=5) == "new"
    assert time.monotonic() - start < 8  # within --graceful-timeout


def test_native_and_wsgi_see_an_ordinary_request(run_server):
    for app in ("nativeapp:app", "wsgiapps:raw_app"):
        server = run_server(app, "--bind", ":0", "--workers", "1")
        plain = http_request(server.port, "GET", "/")
        upgraded = http_request(server.port, "GET", "/", headers=UPGRADE)
        assert upgraded[0] == plain[0] != 101, app
        assert upgraded[2] == plain[2], app


def test_http_keeps_working_after_websockets_on_one_connection(run_server):
    """A refused upgrade (403) leaves the connection an HTTP one."""
    server = _ws(run_server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
        s.sendall(f"GET /reject HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        assert read_response(s).status == 403
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s).body == b"plain http"


def test_max_requests_recycle_closes_websockets_1001(run_server):
    """The upgrade counts as a request: the second one retires the worker,
    and its open WebSockets are closed 1001 while a new worker takes over."""
    server = _ws(run_server, "--max-requests", "2", "--graceful-timeout", "8")
    pid = server.wait_ready()["processes"][0]["pid"]
    with ws_connect(_url(server, "/echo")) as first, ws_connect(_url(server, "/echo")) as second:
        for ws in (first, second):
            assert _closed_by_server(ws).rcvd.code == 1001
    server.wait_state(lambda s: any(p["pid"] != pid and p["ready"] for p in s["processes"]),
                      "a new worker ready")
    with ws_connect(_url(server, "/echo")) as ws:
        ws.send("new")
        assert ws.recv(timeout=5) == "new"


def test_websockets_spread_across_workers(run_server):
    """Open WebSockets count as open connections in the fair-share rule: a
    worker holding more steps aside, so they spread; each worker still accepts."""
    server = run_server("wsapps:app", "--bind", ":0", "--workers", "2")
    server.wait_ready()
    with contextlib.ExitStack() as stack:
        for i in range(40):
            ws = stack.enter_context(ws_connect(_url(server, "/echo")))
            ws.send(str(i))
            assert ws.recv(timeout=5) == str(i)
        snapshot = server.wait_state(
            lambda s: sum(p["open"] for p in s["processes"]) >= 40, "40 connections open")
        opens = sorted(p["open"] for p in snapshot["processes"])
        assert opens[0] >= 10, opens
        assert all(p["state"] != "busy" and p["in_flight"] == 0 for p in snapshot["processes"])


def _raw_upgrade(port: int, path: str, rcvbuf: int = 0) -> tuple[socket.socket, bytes]:
    """A WebSocket opened by hand (with a receive buffer of rcvbuf bytes when
    given): the socket and what followed the 101 head."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    head = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = s.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101 ")
    return s, answer.split(b"\r\n\r\n", 1)[1]


def test_ping_interval_closes_a_silent_client_1011(run_server):
    server = _ws(run_server, "--ws-ping-interval", "0.3")
    with ws_connect(_url(server, "/echo")) as ws:  # answers pings: stays open
        time.sleep(1.2)
        ws.send("alive")
        assert ws.recv(timeout=5) == "alive"
    s, got = _raw_upgrade(server.port, "/echo")
    start = time.monotonic()
    with s:
        while len(got) < 6:  # a ping (2 bytes), then a close with its code (4 or more)
            chunk = s.recv(4096)
            assert chunk, got
            got += chunk
    assert got[:2] == b"\x89\x00"  # the ping, left unanswered
    assert got[2] == 0x88 and int.from_bytes(got[4:6], "big") == 1011
    assert time.monotonic() - start < 5


def _masked_text(text: str) -> bytes:
    """One client text frame (FIN, masked), for a payload below 126 bytes."""
    payload, mask = text.encode(), b"\x01\x02\x03\x04"
    return (bytes([0x81, 0x80 | len(payload)]) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def test_a_client_that_reads_nothing_is_closed_at_request_timeout(run_server):
    server = _ws(run_server, "--request-timeout", "1")
    s, _ = _raw_upgrade(server.port, "/flood", rcvbuf=4096)
    with s:
        s.sendall(_masked_text("5000 65536"))  # 320 MB that the client never reads
        start = time.monotonic()
        server.wait_state(lambda snap: snap["processes"][0]["open"] == 0,
                          "the stalled WebSocket closed", timeout=5)
        elapsed = time.monotonic() - start
    assert 0.9 <= elapsed <= 1.5, elapsed
    assert http_request(server.port, "GET", "/")[0] == 200  # the worker goes on


def _log_lines(log, count: int) -> list[tuple[str, str, str]]:
    """(request, status, bytes) of the access log's lines, once there are count."""
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while len(lines) < count and time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        time.sleep(0.05)  # polling the file: the worker writes it in batches
    return [re.match(r'.*"(.*)" (\d+) (\S+) [\d.]+$', line).groups() for line in lines]


def test_upgrades_are_access_logged_with_their_status(run_server, tmp_path):
    log = tmp_path / "access.log"
    server = _ws(run_server, "--access-log", str(log), "--access-log-format", "common")
    with ws_connect(_url(server, "/echo?x=1")) as ws:
        # logged when accepted, as uvicorn does: the 101 has no body
        assert _log_lines(log, 1) == [("GET /echo?x=1 HTTP/1.1", "101", "-")]
        ws.send("open")
        assert ws.recv(timeout=5) == "open"
    with pytest.raises(InvalidStatus):
        ws_connect(_url(server, "/reject"))
    assert _log_lines(log, 2)[1] == ("GET /reject HTTP/1.1", "403", "-")
