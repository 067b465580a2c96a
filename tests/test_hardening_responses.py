"""Issue 15 from a client's side: what a handler returns never becomes an
invalid response (interim statuses, control characters in header fields), and
absolute-form targets name the host. Real servers, raw sockets."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from conftest import ResponseReader, Server, connect, raw_exchange, wait_until


def serve(*args: str) -> Iterator[Server]:
    server = Server([*args, "--bind", "127.0.0.1:0", "--workers", "1"])
    try:
        yield server.wait_listening()
    finally:
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


# ------------------------------------------------ control characters in headers


def refused(value: str) -> str:
    return f"header value {value!r} contains a control character"


CONTROLS = [0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f]


@pytest.mark.parametrize("code", CONTROLS)
def test_native_control_character_in_header_value_is_500(native, code):
    assert_500_then_served(native, f"/header?v={code}", refused("a" + chr(code) + "b"))
    assert_500_then_served(native, f"/ctype?v={code}", refused("text/plain" + chr(code)))


@pytest.mark.parametrize("code", CONTROLS)
def test_wsgi_control_character_in_header_value_is_500(wsgi, code):
    assert_500_then_served(wsgi, f"/header?v={code}", refused("a" + chr(code) + "b"))


@pytest.mark.parametrize("code", [*CONTROLS, 0x09, 0x20, 0x80])
def test_header_names_stay_tokens(native, wsgi, code):
    # a control character is refused as such, the others as not a token
    assert_500_then_served(native, f"/name?v={code}", "header name 'X")
    assert_500_then_served(wsgi, f"/name?v={code}", "header name 'X")


@pytest.mark.parametrize("code", [0x09, 0x20, 0x7e, 0x80, 0xff])
def test_htab_visible_and_obs_text_values_pass(native, wsgi, code):
    for server in (native, wsgi):
        reply = get(server.port, f"/header?v={code}")
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply
        assert b"\r\nX-Test: a" + bytes([code]) + b"b\r\n" in reply


# ----------------------------------------------------- absolute-form targets


@pytest.mark.parametrize("target, expected", [
    ("http://example.com/host?q=1", ("example.com", "/host", "q=1")),
    ("http://example.com:8080/ho%73t", ("example.com:8080", "/host", "")),
    ("https://[::1]:8443/host", ("[::1]:8443", "/host", "")),
    ("/host", ("x", "/host", "")),  # origin-form: the Host field names the host
])
def test_absolute_form_target_names_the_host_native(native, target, expected):
    data = json.loads(get(native.port, target).split(b"\r\n\r\n", 1)[1])
    assert (data["host"], data["path"], data["query"]) == expected
    assert data["header"] == "x"  # the Host field itself stays as sent


def test_absolute_form_path_and_query_native(native):
    reply = get(native.port, "http://example.com:81/host?q=1")
    data = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert data == {"host": "example.com:81", "path": "/host", "raw_path": "/host",
                    "query": "q=1", "header": "x"}
    # origin-form: the Host field names the host
    data = json.loads(get(native.port, "/host").split(b"\r\n\r\n", 1)[1])
    assert data["host"] == "x" and data["path"] == "/host"


def test_absolute_form_without_a_path_is_slash(native, wsgi):
    assert get(native.port, "http://example.com").endswith(b"\r\n\r\nok")
    assert get(wsgi.port, "http://example.com?a=1").endswith(b"\r\n\r\nok")


@pytest.mark.parametrize("target, expected", [
    ("http://example.com/host?q=1", ("example.com", "example.com", "80", "/host", "q=1")),
    ("http://example.com:8080/host", ("example.com:8080", "example.com", "8080", "/host", "")),
    ("https://[::1]:8443/host", ("[::1]:8443", "[::1]", "8443", "/host", "")),
    ("/host", ("x", "x", "80", "/host", "")),
])
def test_absolute_form_target_names_the_host_wsgi(wsgi, target, expected):
    reply = get(wsgi.port, target)
    assert ast.literal_eval(reply.split(b"\r\n\r\n", 1)[1].decode()) == expected


@pytest.mark.parametrize("target", ["http:///host", "http://user@example.com/host"])
def test_absolute_form_without_a_host_or_with_userinfo_is_400(native, target):
    assert get(native.port, target).startswith(b"HTTP/1.1 400 ")


# --------------------------------------------- a kept request whose copy failed


@pytest.fixture
def keeper() -> Iterator[Server]:
    yield from serve("keepapp:app")


def test_kept_request_whose_copy_failed_raises_instead_of_reading_reused_memory(keeper):
    """The copy of a kept request (after its handler returned) fails: the fields
    copied before stay, the others raise RuntimeError, never the bytes of the
    next request that reuses the buffer; one log line says so."""
    server = keeper
    with connect(server.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"POST /keep HTTP/1.1\r\nHost: first\r\nContent-Length: 16\r\n\r\n"
                     + b"A" * 16)
        assert reader.response().body == b"kept"
        sock.sendall(b"POST /read-kept HTTP/1.1\r\nHost: other\r\nContent-Length: 16\r\n\r\n"
                     + b"B" * 16)
        lines = reader.response().body.decode().split("\n")
    assert lines[:2] == ["POST", "/keep"]
    for name, line in zip(("headers", "body", "host"), lines[2:], strict=True):
        assert line.startswith(f"{name}: RuntimeError: "), lines
    server.wait_for("a request kept past its handler could not be copied out")
    assert "MemoryError: injected" in server.output
