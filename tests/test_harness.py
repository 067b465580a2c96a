"""The harness's own parts that need no server: the response reader and the environment."""

from __future__ import annotations

import os
import socket

import pytest

from tailfast.testing import (
    ConnectionClosed,
    Incomplete,
    ResponseReader,
    check_strict,
    parse_head,
    parse_response,
    parse_whole,
    server_env,
)

CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n1A\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n")


def test_content_length_framing_leaves_the_rest() -> None:
    r = parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabcNEXT")
    assert (r.status, r.reason, r.body, r.rest) == (404, "Not Found", b"abc", b"NEXT")
    assert r.status_line == "HTTP/1.1 404 Not Found" and r.headers == {"content-length": "3",
                                                                       "x-a": "1"}
    with pytest.raises(Incomplete):
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab")
    with pytest.raises(Incomplete):
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Le")


def test_chunked_framing_is_decoded_and_checked() -> None:
    r = parse_whole(CHUNKED)
    assert r.chunked and r.body == b"hello" + b"x" * 26
    with pytest.raises(Incomplete):
        parse_response(CHUNKED[:-2])
    with pytest.raises(ValueError):  # a chunk not followed by CRLF
        parse_response(CHUNKED.replace(b"hello\r\n", b"hello!!"))
    with pytest.raises(ValueError):  # trailers: never sent by tailfast
        parse_response(CHUNKED[:-2] + b"X-T: 1\r\n\r\n")
    head, raw = parse_head(CHUNKED)
    assert head.status == 200 and raw.startswith(b"5;ext=1\r\n")


def test_close_delimited_needs_the_end_and_whole_needs_nothing_after() -> None:
    data = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close"
    with pytest.raises(Incomplete):
        parse_response(data, eof=False)
    assert parse_whole(data).body == b"body until close"
    with pytest.raises(AssertionError):
        parse_whole(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab")


def test_interim_head_and_bodiless_statuses() -> None:
    data = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    interim = parse_response(data)
    assert interim.status == 100 and interim.body == b""
    empty = parse_response(interim.rest)
    assert empty.status == 204
    head = parse_response(empty.rest, head_request=True)
    assert head.status == 200 and head.body == b"" and head.rest == b""


def test_strict_checks() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    check_strict(parse_response(ok))
    with pytest.raises(AssertionError):
        check_strict(parse_response(ok.replace(b"HTTP/1.1", b"HTTP/1.0")))
    with pytest.raises(AssertionError):
        check_strict(parse_response(b"HTTP/1.1 200 OK\r\nA: 1\r\na: 2\r\n"
                                    b"Content-Length: 0\r\n\r\n"))
    with pytest.raises(AssertionError):
        check_strict(parse_response(CHUNKED))


def test_reader_keeps_pipelined_bytes_and_reports_a_cut() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
                       b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"
                       b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ncut")
        theirs.shutdown(socket.SHUT_WR)
        reader = ResponseReader(ours, strict=True)
        assert reader.response().body == b"a"
        assert reader.response().body == b"b"
        with pytest.raises(ConnectionClosed):
            reader.response()


def test_server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILFAST_WORKERS", "3")
    monkeypatch.setenv("WORKERS", "3")
    monkeypatch.setenv("LISTEN_FDS", "1")
    env = server_env({"EXTRA": "1"}, paths=["/somewhere"])
    assert not {"TAILFAST_WORKERS", "WORKERS", "LISTEN_FDS"} & set(env)
    path = env["PYTHONPATH"].split(os.pathsep)
    assert path[0] == "/somewhere" and path[1].endswith(os.path.join("tests", "apps"))
    assert env["PYTHONUNBUFFERED"] == "1" and env["EXTRA"] == "1"
