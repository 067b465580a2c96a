"""FastAPI, Starlette and Django over ASGI on tailfast, compared answer by answer with uvicorn."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import ROOT, http_request, server_env

# Fields whose values must agree (the rest, Date and Server, are the server's own).
COMPARED = ("content-type", "content-length", "location", "set-cookie", "x-error", "x-tagged",
            "transfer-encoding")

Request = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def uvicorn_server() -> Iterator[object]:
    """uvicorn_server(app) -> port of a uvicorn serving app (stopped at the end)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(app: str) -> int:
        pytest.importorskip("uvicorn")
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--host", "127.0.0.1",
             "--log-level", "warning", "--workers", "1"],
            env=server_env(), cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 20
        while True:
            try:
                http_request(port, "GET", "/", timeout=2)
                return port
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"uvicorn did not start: {proc.stderr.read()!r}") from None
                time.sleep(0.05)

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _answer(port: int, request: Request) -> tuple[int, bytes, dict[str, str]]:
    method, path, body, headers = request
    status, got, data = http_request(port, method, path, body=body, headers=headers)
    return status, data, {k: got[k] for k in COMPARED if k in got}


def _compare(run_server, uvicorn_server, app: str, requests: list[Request]) -> None:
    ours = run_server(app, "--bind", ":0", "--workers", "1").port
    theirs = uvicorn_server(app)
    for request in requests:
        expected = _answer(theirs, request)
        assert _answer(ours, request) == expected, request


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


def test_fastapi_like_uvicorn(run_server, uvicorn_server):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    _compare(run_server, uvicorn_server, "examples.fastapi_app:app", [
        ("GET", "/", b"", {}),
        ("GET", "/items/42?q=hello%20world&limit=3", b"", {}),
        ("GET", "/items/not-a-number", b"", {}),
        ("POST", "/items", b'{"name": "pen", "price": 1.5, "tags": ["a"]}', JSON),
        ("POST", "/items", b'{"name": "pen"}', JSON),
        ("POST", "/items", b"{not json", JSON),
        ("POST", "/login", b"username=ann&password=s3cret", FORM),
        ("GET", "/cookie/set", b"", {}),
        ("GET", "/cookie/read", b"", {"Cookie": "session=abc123; other=1"}),
        ("GET", "/cookie/read", b"", {}),
        ("GET", "/redirect", b"", {}),
        ("GET", "/stream?n=7", b"", {}),
        ("POST", "/background?name=first", b"", {}),
        ("POST", "/background?name=second", b"", {}),
        ("GET", "/sleep?s=0.05", b"", {}),  # the background tasks are done by then
        ("GET", "/background/done", b"", {}),
        ("GET", "/missing/abc", b"", {}),
        ("GET", "/sync", b"", {}),
        ("GET", "/state", b"", {}),
        ("HEAD", "/", b"", {}),
        ("GET", "/nowhere", b"", {}),
        ("DELETE", "/items/1", b"", {}),
    ])


def test_starlette_like_uvicorn(run_server, uvicorn_server):
    pytest.importorskip("starlette")
    pytest.importorskip("multipart")
    _compare(run_server, uvicorn_server, "starletteapp:app", [
        ("GET", "/", b"", {}),
        ("GET", "/users/ann?x=1&y=2", b"", {}),
        ("POST", "/echo", b"abcdef" * 1000, {}),
        ("POST", "/form", b"a=1&b=two", FORM),
        ("GET", "/stream", b"", {}),
        ("GET", "/moved", b"", {}),
        ("GET", "/nowhere", b"", {}),
        ("GET", "/boom", b"", {}),
    ])


def test_django_asgi_like_uvicorn(run_server, uvicorn_server):
    pytest.importorskip("django")
    _compare(run_server, uvicorn_server, "examples.django_site.asgi:application", [
        ("GET", "/", b"", {}),
        ("GET", "/later", b"", {}),
        ("POST", "/later", b"", {}),
        ("GET", "/nowhere/", b"", {}),
        ("GET", "/hello", b"", {}),
    ])


def test_fastapi_requests_wait_concurrently(run_server):
    """Many FastAPI requests awaiting at once on one worker overlap."""
    pytest.importorskip("fastapi")
    import threading

    server = run_server("examples.fastapi_app:app", "--bind", ":0", "--workers", "1")
    results: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        status = http_request(server.port, "GET", "/sleep?s=0.5", timeout=20)[0]
        with lock:
            results.append(status)

    start = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 32 and time.monotonic() - start < 5  # 16 s one after another


def _websocket_exchange(port: int) -> list[object]:
    """What a client sees of examples/fastapi_app.py's WebSocket route."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    seen: list[object] = []
    url = f"ws://127.0.0.1:{port}/ws"
    with connect(f"{url}/lobby", subprotocols=["chat"]) as ws:
        seen.append(ws.subprotocol)
        ws.send("hello")
        seen.append(ws.recv(timeout=5))
        ws.send(b"\x01\x02")
        seen.append(ws.recv(timeout=5))
        ws.send("bye")
        try:
            ws.recv(timeout=5)
        except ConnectionClosed as closed:
            seen.append((closed.rcvd.code, closed.rcvd.reason))
    try:
        connect(f"{url}/private")
    except InvalidStatus as refused:
        seen.append(refused.response.status_code)
    try:
        connect(f"{url}/paid")
    except InvalidStatus as denied:  # the app's own answer (the denial response extension)
        response = denied.response
        seen.append((response.status_code, response.headers["x-plan"], response.body))
    return seen


def test_fastapi_websocket_like_uvicorn(run_server, uvicorn_server):
    pytest.importorskip("fastapi")
    pytest.importorskip("websockets")
    ours = run_server("examples.fastapi_app:app", "--bind", ":0", "--workers", "1").port
    theirs = uvicorn_server("examples.fastapi_app:app")
    expected = _websocket_exchange(theirs)
    assert expected == ["chat", "lobby: hello", b"lobby: \x01\x02", (4002, "asked to"), 403,
                        (402, "free", b"payment required")]
    assert _websocket_exchange(ours) == expected
