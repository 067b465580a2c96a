"""The native handler interface: every Request attribute and return type, streaming,
sendfile, header validation and async rejection, against real server processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    http_request,
    parse_head,
    parse_whole,
    raw_exchange,
    rss_kib,
    server_env,
    wait_until,
)


@pytest.fixture
def server(run_server):
    return run_server("nativeapp:app", "--bind", ":0", "--workers", "1")


def test_request_attributes(server):
    reply = raw_exchange(
        server.port,
        b"POST /at%74rs?a=1&b=&a=%C3%A9 HTTP/1.1\r\nHost: example.test\r\nX-Multi: one\r\n"
        b"Cookie: sid=abc; theme=\"dark\"\r\nx-multi: two\r\nCookie: late=1; sid=ignored\r\n"
        b"Content-Length: 4\r\nConnection: close\r\n\r\nbody",
    )
    response = parse_whole(reply)
    assert response.status_line == "HTTP/1.1 200 OK"
    info = json.loads(response.body)
    assert info["method"] == "POST"
    assert info["path"] == "/attrs" and info["raw_path"] == "/at%74rs"
    assert info["query_string"] == "a=1&b=&a=%C3%A9"
    assert info["query"] == {"a": ["1", "é"], "b": [""]}
    assert info["first_a"] == "1"
    assert info["cookies"] == {"sid": "abc", "theme": "dark", "late": "1"}
    assert info["x_multi"] == ["one", "two"]
    assert info["names"] == ["Host", "X-Multi", "Cookie", "Content-Length", "Connection"]
    assert ["x-multi", "two"] in info["headers"]
    assert info["body"] == "body"
    assert info["remote_addr"] == "127.0.0.1" and 0 < info["remote_port"] < 65536
    assert info["http_version"] == "HTTP/1.1"
    assert info["worker_id"] == 1
    assert info["same_headers"] and info["same_query"]  # computed once, cached
    reply = raw_exchange(server.port, b"GET /attrs HTTP/1.0\r\n\r\n")
    info = json.loads(parse_whole(reply).body)
    assert info["http_version"] == "HTTP/1.0"
    assert info["query"] == {} and info["cookies"] == {} and info["body"] == ""


def test_non_utf8_path(server):
    status, _, body = http_request(server.port, path="/%FF%FEx")
    assert status == 404
    # raw_path keeps the bytes as sent; path decodes UTF-8 with replacement characters
    assert json.loads(body) == {"path": "/\ufffd\ufffdx"}
    _, _, body = http_request(server.port, path="/attrs/%E2%82%AC")
    assert json.loads(body) == {"path": "/attrs/€"}


def test_json_body_and_malformed_json(server):
    status, _, body = http_request(server.port, "POST", "/json", body=b'{"k": [1, 2]}')
    assert (status, json.loads(body)) == (200, {"got": {"k": [1, 2]}})
    status, headers, body = http_request(server.port, "POST", "/json", body=b'{"k": ')
    assert status == 400
    assert body.startswith(b"400 the request body is not valid JSON")
    assert headers["content-type"].startswith("text/plain")
    status, _, body = http_request(server.port, "POST", "/json", body=b"\xff\xfe{")
    assert status == 400
    status, _, body = http_request(server.port, "POST", "/json")
    assert (status, body) == (400, b"400 the request has no body; JSON was expected\n")
    status, _, body = http_request(server.port, "POST", "/json-caught", body=b"nope")
    assert (status, body) == (422, b"caught: BadRequest")
    status, _, body = http_request(server.port, "GET", "/teapot")
    assert (status, body) == (400, b"400 custom refusal\n")
    assert "Traceback" not in server.output  # an HTTPError is an answer, not a crash


def test_return_types(server):
    status, headers, body = http_request(server.port, path="/str")
    assert (status, body.decode()) == (200, "héllo")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len("héllo".encode()))
    status, headers, body = http_request(server.port, path="/resp-ctype")
    assert (status, body, headers["content-type"], headers["x-a"]) == (
        201, b"<b>x</b>", "text/html", "1")


def test_generator_is_streamed_chunked_on_http11_and_until_close_on_http10(server):
    reply = raw_exchange(server.port,
                         b"GET /gen?n=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = parse_whole(reply)
    assert response.status_line == "HTTP/1.1 200 OK"
    headers = response.headers
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert response.body == b"".join(b"chunk %d\n" % i for i in range(4))
    reply = raw_exchange(server.port, b"GET /gen?n=3 HTTP/1.0\r\n\r\n")
    response = parse_whole(reply)
    headers, body = response.headers, response.body
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert "keep-alive" not in headers.get("connection", "")  # the close ends the body
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"
    # keep-alive holds after a chunked body: two streamed answers on one connection
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for n in (2, 5):
            conn.request("GET", f"/gen?n={n}")
            resp = conn.getresponse()
            assert resp.read() == b"".join(b"chunk %d\n" % i for i in range(n))
        conn.request("GET", "/gen?n=0")
        assert conn.getresponse().read() == b""
    finally:
        conn.close()


def test_head_of_a_streamed_response_has_no_body(server):
    reply = raw_exchange(server.port, b"HEAD /gen HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\n")


def test_first_chunk_arrives_before_the_generator_finishes(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /gen-slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        start = time.monotonic()
        data = b""
        while b"first\n" not in data:
            data += s.recv(4096)
        first_at = time.monotonic() - start
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        total = time.monotonic() - start
    assert first_at < 1.0 <= total  # the generator sleeps 1.5 s between its chunks
    assert parse_whole(data).body == b"first\nsecond\n"


def test_50_mb_stream_is_not_buffered_whole(server):
    pid = server.live_workers()[1]
    before = rss_kib(pid)
    peak = before
    received = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /gen-big?mb=50 HTTP/1.0\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        received = len(head.partition(b"\r\n\r\n")[2])
        reads = 0
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            received += len(chunk)
            reads += 1
            if reads % 64 == 0:
                peak = max(peak, rss_kib(pid))
                time.sleep(0.001)  # a slowish reader: the worker must wait, not buffer
    assert received == 50 << 20
    assert peak - before < 12 * 1024, f"worker RSS grew by {peak - before} kB"


def test_generator_error_before_output_is_500_after_output_cuts_the_connection(server):
    reply = raw_exchange(server.port, b"GET /gen-fail-first HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    server.wait_for("generator failed before any output")
    reply = raw_exchange(server.port, b"GET /gen-fail-later HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = parse_head(reply)  # the body as sent: cut on purpose
    assert head.status_line == "HTTP/1.1 200 OK"
    assert body.startswith(b"8\r\npartial\n\r\n")
    assert not body.endswith(b"0\r\n\r\n")  # no last chunk: the client sees a cut body
    server.wait_for("generator failed mid-stream")
    assert http_request(server.port, path="/str")[0] == 200


def test_generator_is_closed_when_the_client_goes_away(server, tmp_path):
    marker = tmp_path / "closed"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(f"GET /gen-closed?file={marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(65536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # the app creates the file, then writes it
    wait_until(lambda: marker.exists() and marker.read_text() != "", timeout=10)
    assert marker.read_text() == "closed"
    assert http_request(server.port, path="/str")[0] == 200


def test_file_response_uses_sendfile_with_content_length(server, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    status, headers, body = http_request(server.port, path=f"/file?p={path}")
    assert status == 200 and body == data
    assert headers["content-length"] == str(len(data))
    assert headers["content-type"] == "application/octet-stream"
    text = tmp_path / "page.html"
    text.write_text("<p>hi</p>")
    status, headers, body = http_request(server.port, path=f"/file?p={text}")
    assert (body, headers["content-type"]) == (b"<p>hi</p>", "text/html")
    status, headers, body = http_request(server.port, path=f"/file-ct?p={text}")
    assert (headers["content-type"], headers["x-file"]) == ("application/x-custom", "yes")
    reply = raw_exchange(server.port, f"HEAD /file?p={path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert f"Content-Length: {len(data)}\r\n".encode() in reply and reply.endswith(b"\r\n\r\n")
    assert http_request(server.port, path=f"/file?p={tmp_path}/missing")[0] == 404
    assert http_request(server.port, path=f"/file?p={tmp_path}")[0] == 404
    # files and ordinary answers interleave on one keep-alive connection
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", f"/file?p={path}")
            assert conn.getresponse().read() == data
            conn.request("GET", "/str")
            assert conn.getresponse().read() == "héllo".encode()
    finally:
        conn.close()


def test_pipelined_requests_behind_a_file_stay_in_order(server, tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"A" * 500_000)
    reply = raw_exchange(
        server.port,
        f"GET /file?p={path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        + b"GET /gen?n=2 HTTP/1.1\r\nHost: x\r\n\r\nGET /str HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
        timeout=10,
    )
    first_end = reply.index(b"\r\n\r\n") + 4 + 500_000
    assert reply[first_end - 500_000:first_end] == b"A" * 500_000
    rest = reply[first_end:]
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and b"chunk 1\n" in rest
    assert rest.endswith("héllo".encode())


@pytest.mark.parametrize("path, message", [
    ("/bad-name", "header name 'Bad Name' is not a token"),
    ("/bad-value-lf", "contains CR, LF or NUL"),
    ("/bad-status", "invalid status 1000"),
    ("/coroutine", "declare the handler `async def` to have it awaited"),
])
def test_invalid_responses_are_500_with_a_log_line(server, path, message):
    reply = raw_exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"Injected" not in reply
    server.wait_for(message)


@pytest.mark.parametrize("target, message", [
    ("nativeapp:three_args", "expected handler(request), a WSGI app(environ, start_response) "
     "or an ASGI app(scope, receive, send)"),
])
def test_unsupported_targets_are_rejected_at_start_up(target, message):
    env = server_env()
    proc = subprocess.run([sys.executable, "-m", "tailfast", "run", target, "--bind", ":0"],
                          capture_output=True, text=True, timeout=30, env=env, cwd=ROOT)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "listening" not in proc.stderr


def test_file_response_api_is_exported():
    import tailfast
    assert issubclass(tailfast.FileResponse, tailfast.Response)
    assert tailfast.FileResponse(Path("/x")).path == "/x"
    assert issubclass(tailfast.BadRequest, ValueError)


def test_a_star_args_target_needs_an_explicit_interface():
    env = server_env()
    proc = subprocess.run([sys.executable, "-m", "tailfast", "run", "wsgiapps:validated_app",
                           "--bind", ":0"], capture_output=True, text=True, timeout=30, env=env,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert "choose with --interface native|wsgi" in proc.stderr
