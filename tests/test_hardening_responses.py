"""Issue 15 from a client's side: what a handler returns never becomes an
invalid response (interim statuses, control characters in header fields), and
absolute-form targets name the host. Real servers, raw sockets."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from conftest import Server, raw_exchange, wait_until


def serve(*args: str) -> Iterator[Server]:
    server = Server([*args, "--bind", "127.0.0.1:0", "--workers", "1"]).wait_listening()
    yield server
    server.stop()
    assert not server.leftovers(), f"processes left behind: {server.leftovers()}"


@pytest.fixture(scope="module")
def native() -> Iterator[Server]:
    yield from serve("hardenapp:app")


@pytest.fixture(scope="module")
def wsgi() -> Iterator[Server]:
    yield from serve("hardenapp:wsgi_app", "--interface", "wsgi")


def get(port: int, target: str, extra: str = "") -> bytes:
    return raw_exchange(port, f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())


def assert_500_then_served(server, target: str, message: str) -> None:
    """target answers 500 with one log line holding message, and nothing else
    goes out on that connection; the worker then answers the next request."""
    before = server.output.count(message)
    reply = raw_exchange(server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"
                         "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"), reply[:200]
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    wait_until(lambda: server.output.count(message) > before)
    assert server.output.count(message) == before + 1, server.output[-2000:]
    assert get(server.port, "/ok").endswith(b"\r\n\r\nok")


# ------------------------------------------------------------ 1xx as a final answer


@pytest.mark.parametrize("status", [100, 101, 103, 199, 99, 1000])
def test_native_interim_or_invalid_status_is_500(native, status):
    assert_500_then_served(native, f"/status?s={status}", f"invalid status {status}:")
    assert_500_then_served(native, f"/tuple-status?s={status}", f"invalid status {status}:")


@pytest.mark.parametrize("status", ["100 Continue", "101 Switching Protocols",
                                    "199 Odd", "1000 Big", "20 Short"])
def test_wsgi_interim_or_invalid_status_is_500(wsgi, status):
    assert_500_then_served(wsgi, f"/status?s={quote(status)}",
                           f"invalid WSGI status {status!r}")


@pytest.mark.parametrize("status", [200, 204, 599, 999])
def test_final_statuses_still_pass(native, wsgi, status):
    assert get(native.port, f"/status?s={status}").startswith(f"HTTP/1.1 {status} ".encode())
    assert get(wsgi.port, f"/status?s={status}%20Fine").startswith(
        f"HTTP/1.1 {status} ".encode())
