"""WSGI (PEP 3333): a compliance-checking app under wsgiref.validate, and real Flask and
Falcon apps that must answer exactly as they do under wsgiref.simple_server."""

from __future__ import annotations

import ast
import importlib
import json
import socket
import sys
import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from conftest import APPS, http_request, parse_head, parse_whole, raw_exchange, wait_until

FORM = b"a=1&b=two+words&a=3"
BOUNDARY = "tfboundary42"
UPLOAD = (
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi there\r\n"
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n"
    f"Content-Type: application/octet-stream\r\n\r\n"
).encode() + bytes(range(256)) * 40 + f"\r\n--{BOUNDARY}--\r\n".encode()
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.fixture
def validated(run_server):
    # validator(app) takes (*args, **kw): the interface cannot be told from it
    return run_server("wsgiapps:validated_app", "--bind", ":0", "--workers", "1",
                      "--interface", "wsgi")


@pytest.fixture
def raw(run_server):
    return run_server("wsgiapps:raw_app", "--bind", ":0", "--workers", "1")


# ------------------------------------------------------------ PEP 3333 details


def test_environ_is_complete_and_typed(validated):
    reply = raw_exchange(
        validated.port,
        b"POST /environ?x=%41 HTTP/1.1\r\nHost: example.test:8080\r\nContent-Type: text/plain\r\n"
        b"X-Multi: a\r\nX-Multi: b\r\nX_Under: sneaky\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\nabc",
    )
    response = parse_whole(reply)
    assert response.status_line == "HTTP/1.1 200 OK"
    info = ast.literal_eval(response.body.decode())
    assert info["problems"] == []
    assert info["method"] == "POST" and info["script_name"] == ""
    assert info["path_info"] == "/environ" and info["query"] == "x=%41"
    assert (info["content_type"], info["content_length"]) == ("text/plain", "3")
    assert info["server"] == ("example.test", "8080")
    assert info["protocol"] == "HTTP/1.1"
    assert info["remote"][0] == "127.0.0.1" and info["remote"][1].isdigit()
    assert info["x_multi"] == "a,b"
    assert info["x_under"] is None  # X_Under would pose as X-Under: dropped
    assert info["terminated"] is True and info["has_file_wrapper"] and info["errors_writable"]


def test_script_name_and_latin1_path_info(run_server):
    server = run_server("wsgiapps:mounted_app", "--bind", ":0", "-w", "1",
                        "--script-name", "/api/")
    # PATH_INFO is the UTF-8 bytes of "é" carried in a latin-1 str, as PEP 3333 says
    body = http_request(server.port, path="/api/v1/%C3%A9")[2]
    assert body == b"/api|/v1/" + "é".encode().decode("latin-1").encode("utf-8")
    assert http_request(server.port, path="/api")[2] == b"/api|"
    assert http_request(server.port, path="/other")[2] == b"/api|/other"


def test_wsgi_input_read_readline_readlines_iteration(validated):
    status, _, body = http_request(validated.port, "POST", "/input",
                                   body=b"line one\nXYline two\nline three\n")
    assert status == 200
    assert ast.literal_eval(body.decode()) == (b"line one\n", b"XY",
                                               [b"line two\n", b"line three\n"], b"")
    _, _, body = http_request(validated.port, "POST", "/input-iter", body=b"a\nb\nc")
    assert ast.literal_eval(body.decode()) == [b"a\n", b"b\n", b"c"]


def test_chunked_upload_is_terminated_input(validated):
    reply = raw_exchange(
        validated.port,
        b"POST /read-all HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n",
    )
    response = parse_whole(reply)
    assert response.status_line == "HTTP/1.1 200 OK"
    assert response.body == b"wikipedia"


def test_get_and_post_with_a_body(validated, raw):
    assert http_request(validated.port, path="/nothing")[::2] == (404, b"not found")
    payload = bytes(range(256)) * 4096
    status, headers, body = http_request(validated.port, "POST", "/read-all", body=payload)
    assert (status, body) == (200, payload)
    # a one-item list is sent whole, with its length (the validator hides the list)
    status, headers, body = http_request(raw.port, "POST", "/read-all", body=payload)
    assert (status, body) == (200, payload)
    assert headers["content-length"] == str(len(payload))


def test_write_callable_then_iterable_is_chunked(validated):
    reply = raw_exchange(validated.port,
                         b"GET /write HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = parse_whole(reply)
    assert response.status_line == "HTTP/1.1 200 OK"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.body == b"written twice then returned"
    reply = raw_exchange(validated.port, b"GET /write HTTP/1.0\r\n\r\n")
    assert parse_whole(reply).body == b"written twice then returned"


def test_streaming_iterable_without_length_is_chunked(validated):
    reply = raw_exchange(validated.port,
                         b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = parse_whole(reply)
    headers = response.headers
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert response.body == b"".join(b"part %d\n" % i for i in range(5))
    assert http_request(validated.port, path="/empty-first")[2] == b"after empties"
    reply = raw_exchange(validated.port, b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.endswith(b"\r\n\r\n") and b"part" not in reply


def test_content_length_is_respected(raw):
    reply = raw_exchange(raw.port, b"GET /length HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = parse_whole(reply)
    headers = response.headers
    assert headers["content-length"] == "5" and "transfer-encoding" not in headers
    assert response.body == b"12345"


def test_exc_info_replaces_the_status_before_output(validated):
    status, headers, body = http_request(validated.port, path="/exc-info")
    assert (status, body) == (503, b"replaced")
    assert "x-early" not in headers


def test_exc_info_after_output_reraises_and_cuts_the_body(validated):
    reply = raw_exchange(validated.port, b"GET /exc-info-late HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = parse_head(reply)  # the body as sent: cut on purpose
    assert head.status_line == "HTTP/1.1 200 OK"
    assert body.startswith(b"c\r\nalready sent\r\n") and not body.endswith(b"0\r\n\r\n")
    validated.wait_for("KeyError: 'after output'")
    assert http_request(validated.port, path="/stream")[0] == 200


def test_file_wrapper_is_sent_with_sendfile(raw, validated, tmp_path):
    data = bytes(range(256)) * 20000
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    status, headers, body = http_request(raw.port, path=f"/file?{path}")
    assert (status, body) == (200, data)
    assert headers["content-length"] == str(len(data))  # known length: no chunking
    status, headers, body = http_request(raw.port, path=f"/file?{path}",
                                         headers={"X-Seek": "1000"})
    assert body == data[1000:] and headers["content-length"] == str(len(data) - 1000)
    # under the validator the wrapper is hidden and iterated: same bytes
    assert http_request(validated.port, path=f"/file?{path}")[2] == data


def test_close_is_called_when_the_client_goes_away(raw, tmp_path):
    marker = tmp_path / "closed"
    with socket.create_connection(("127.0.0.1", raw.port), timeout=5) as s:
        s.sendall(f"GET /closed?{marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # the app creates the file, then writes it
    wait_until(lambda: marker.exists() and marker.read_text() != "", timeout=10)
    assert marker.read_text().startswith("closed ")
    assert http_request(raw.port, path="/stream")[0] == 200


@pytest.mark.parametrize("path, message", [
    ("/bad-header", "contains CR, LF or NUL"),
    ("/bad-status", "invalid WSGI status 'OK'"),
    ("/no-start", "did not call start_response"),
])
def test_invalid_wsgi_responses_are_500(raw, path, message):
    reply = raw_exchange(raw.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Injected" not in reply
    raw.wait_for(message)


# --------------------------------------------------- real frameworks, unchanged


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def reference() -> Iterator[object]:
    """reference(module_name) serves module.app with wsgiref in this process; returns the port."""
    servers = []

    def start(module_name: str) -> int:
        if str(APPS) not in sys.path:
            sys.path.insert(0, str(APPS))
        app = importlib.import_module(module_name).app
        httpd = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        servers.append((httpd, thread))
        return httpd.server_port

    yield start
    for httpd, thread in servers:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


MATTER = ("content-type", "location", "set-cookie")


def _fetch(port: int, method: str, path: str, body: bytes,
           headers: dict[str, str] | None) -> tuple[int, dict[str, list[str]], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        fields: dict[str, list[str]] = {}
        for name, value in resp.getheaders():
            fields.setdefault(name.lower(), []).append(value)
        return resp.status, fields, data
    finally:
        conn.close()


def _compare(ours: int, theirs: int, method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """The same request to tailfast and to wsgiref: status, body and the headers
    that matter must be equal. Returns tailfast's answer."""
    a = _fetch(ours, method, path, body, headers)
    b = _fetch(theirs, method, path, body, headers)
    assert a[0] == b[0], (path, a, b)
    assert a[2] == b[2], path
    for name in MATTER:
        assert a[1].get(name) == b[1].get(name), (path, name)
    if "content-length" in b[1] and "content-length" in a[1]:
        assert a[1]["content-length"] == b[1]["content-length"]
    return a[0], {k: "\n".join(v) for k, v in a[1].items()}, a[2]


def test_flask_app_runs_unchanged(run_server, reference):
    server = run_server("flaskapp:app", "--bind", ":0", "--workers", "1")
    ref = reference("flaskapp")
    assert _compare(server.port, ref, "GET", "/")[2] == b"hello from flask"
    assert json.loads(_compare(server.port, ref, "GET", "/user/ann?q=1&q=2")[2]) == {
        "name": "ann", "q": ["1", "2"]}
    status, _, body = _compare(server.port, ref, "POST", "/json", b'{"a": [1, 2]}',
                               {"Content-Type": "application/json"})
    assert (status, json.loads(body)["received"]) == (201, {"a": [1, 2]})
    body = _compare(server.port, ref, "POST", "/form", FORM,
                    {"Content-Type": "application/x-www-form-urlencoded"})[2]
    assert json.loads(body)["fields"] == {"a": ["1", "3"], "b": ["two words"]}
    body = _compare(server.port, ref, "POST", "/upload", UPLOAD, MULTIPART)[2]
    assert json.loads(body) == {"filename": "data.bin", "size": 10240,
                                "head": "\x00\x01\x02\x03\x04\x05\x06\x07", "note": "hi there"}
    _, headers, _ = _compare(server.port, ref, "GET", "/cookie/set")
    assert "flavor=oatmeal" in headers["set-cookie"]
    body = _compare(server.port, ref, "GET", "/cookie/get", headers={
        "Cookie": "flavor=oatmeal; size=large"})[2]
    assert json.loads(body) == {"flavor": "oatmeal", "size": "large"}
    status, headers, _ = _compare(server.port, ref, "GET", "/go")
    assert status == 302 and headers["location"].endswith("/user/target")
    assert _compare(server.port, ref, "GET", "/stream")[2] == b"".join(
        b"line %d\n" % i for i in range(5))
    assert _compare(server.port, ref, "GET", "/missing")[0] == 404
    assert _compare(server.port, ref, "GET", "/forbidden")[0] == 403
    assert _compare(server.port, ref, "GET", "/boom")[0] == 500
    assert _compare(server.port, ref, "HEAD", "/")[2] == b""


def test_falcon_app_runs_unchanged(run_server, reference):
    server = run_server("falconapp:app", "--bind", ":0", "--workers", "1")
    ref = reference("falconapp")
    body = _compare(server.port, ref, "GET", "/items/5?q=a&q=b")[2]
    assert json.loads(body) == {"id": 5, "q": ["a", "b"]}
    status, _, body = _compare(server.port, ref, "POST", "/items/9", b'{"x": true}',
                               {"Content-Type": "application/json"})
    assert (status, json.loads(body)) == (201, {"id": 9, "received": {"x": True}})
    body = _compare(server.port, ref, "POST", "/form", FORM,
                    {"Content-Type": "application/x-www-form-urlencoded"})[2]
    assert json.loads(body)["fields"] == {"a": ["1", "3"], "b": "two words"}
    body = _compare(server.port, ref, "POST", "/upload", UPLOAD, MULTIPART)[2]
    assert json.loads(body) == {"note": {"filename": None, "size": 8},
                                "file": {"filename": "data.bin", "size": 10240}}
    status, headers, body = _compare(server.port, ref, "GET", "/cookies",
                                     headers={"Cookie": "a=1"})
    assert "flavor=falcon" in headers["set-cookie"] and json.loads(body) == {"seen": {"a": "1"}}
    status, headers, _ = _compare(server.port, ref, "GET", "/go")
    assert (status, headers["location"]) == (302, "/items/7")
    assert _compare(server.port, ref, "GET", "/stream")[2] == b"alpha\nbeta\ngamma\n"
    assert _compare(server.port, ref, "GET", "/items/notanumber")[0] == 404
    assert _compare(server.port, ref, "GET", "/boom")[0] == 500
    assert _compare(server.port, ref, "HEAD", "/items/1")[2] == b""
