"""Replays the request corpus (tests/http_corpus/) against a live server.

Each case is sent whole, line by line, in random (seeded) splits and one byte
at a time; it must give the same outcome every way: for a valid case, the
fields the echo app (tests/apps/echoapp.py) saw; for an invalid one, its error
status, "Connection: close", and the connection closed with nothing more
answered. One server serves the whole module.
"""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Iterator

import corpus
import pytest
from conftest import Server

from tailfast.testing import Incomplete, Response, check_strict, parse_response

VALID = corpus.load("valid")
INVALID = corpus.load("invalid")
ALL = VALID + INVALID
AFTER = b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n"
PAUSE = 0.001  # between pieces, so that they reach the server in separate reads


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server(["echoapp:app", "--bind", "127.0.0.1:0", "--workers", "1",
                  *corpus.LIMIT_ARGS]).wait_listening()
    yield srv
    srv.stop()
    assert not srv.leftovers(), f"processes left behind: {srv.leftovers()}"


# ------------------------------------------------------------------ responses


def final_response(buf: bytes) -> Response | None:
    """The first non-1xx response in buf, or None while it is incomplete.
    Content-Length framed (all this server sends)."""
    while True:
        try:
            response = check_strict(parse_response(buf, eof=False), unique_fields=False)
        except Incomplete:
            return None
        if not 100 <= response.status < 200:
            return response
        buf = response.rest


def check(case: corpus.Case, buf: bytes, eof: bool) -> None:
    """Asserts that what the server sent (buf; eof when it then closed) is the
    outcome the case expects."""
    response = final_response(buf)
    assert response is not None, f"{case.name}: no complete response in {buf[:200]!r}"
    status, headers, body, rest = response.status, response.headers, response.body, response.rest
    assert status == case.status, f"{case.name}: {status} {body[:200]!r}"
    if case.expect_json is not None:
        assert json.loads(body) == case.expect_json, case.name
    if status >= 400:
        assert headers["connection"] == "close", case.name
        assert body.startswith(str(status).encode()), case.name
        assert rest == b"" and eof, f"{case.name}: more after the error: {rest[:100]!r}"


def exchange(port: int, pieces: list[bytes]) -> tuple[bytes, bool]:
    """Sends pieces with a pause between them and reads until the first final
    response is complete (and, after an error, until the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(PAUSE)
            try:
                s.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # rejected early: the answer is already on its way
        buf, eof = b"", False
        while True:
            response = final_response(buf)
            if response is not None and response.status < 400:
                break
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                eof = True
                break
            buf += chunk
        return buf, eof


# ------------------------------------------------------------------ splits


def by_lines(data: bytes) -> list[bytes]:
    return [line for line in data.splitlines(keepends=True)]


def random_splits(data: bytes, seed: str) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(rng.randint(1, 8), len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# ------------------------------------------------------------------ tests


def test_the_corpus_is_large_enough() -> None:
    assert len(VALID) >= 60 and len(INVALID) >= 60
    assert all(c.expect_json is not None and c.status == 200 for c in VALID)
    assert all(c.status >= 400 and c.expect_json is None for c in INVALID)


def handler_calls(port: int) -> int:
    buf, _ = exchange(port, [b"GET /__count HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"])
    response = final_response(buf)
    assert response is not None
    return int(response.body)


@pytest.mark.parametrize("case", VALID, ids=[c.name for c in VALID])
def test_valid_whole(server: Server, case: corpus.Case) -> None:
    check(case, *exchange(server.port, [case.data]))


@pytest.mark.parametrize("case", INVALID, ids=[c.name for c in INVALID])
def test_invalid_whole_never_reaches_the_handler(server: Server, case: corpus.Case) -> None:
    before = handler_calls(server.port)
    # a request pipelined behind the invalid one must never be answered
    check(case, *exchange(server.port, [case.data + AFTER]))
    assert handler_calls(server.port) == before + 1  # the count request itself


@pytest.mark.parametrize("case", ALL, ids=[c.name for c in ALL])
def test_line_by_line(server: Server, case: corpus.Case) -> None:
    check(case, *exchange(server.port, by_lines(case.data)))


@pytest.mark.parametrize("case", ALL, ids=[c.name for c in ALL])
def test_random_splits(server: Server, case: corpus.Case) -> None:
    for k in range(2):
        check(case, *exchange(server.port, random_splits(case.data, f"{case.name}/{k}")))


def test_every_case_one_byte_at_a_time(server: Server) -> None:
    """All cases at once, each on its own connection, one byte per connection
    per round: the server sees every case arrive byte by byte, and the run takes
    as long as the longest case rather than the sum of all."""
    states = []
    for case in ALL:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        states.append({"case": case, "sock": s, "sent": 0, "buf": b"", "eof": False})
    failures = []
    deadline = time.monotonic() + 30
    try:
        active = list(states)
        while active and time.monotonic() < deadline:
            for st in list(active):
                s, data = st["sock"], st["case"].data
                # stop sending once answered (an early rejection); a 100 Continue is no answer
                if st["sent"] < len(data) and final_response(st["buf"]) is None:
                    try:
                        st["sent"] += s.send(data[st["sent"]:st["sent"] + 1])
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        st["sent"] = len(data)
                try:
                    chunk = s.recv(65536)
                    if chunk:
                        st["buf"] += chunk
                    else:
                        st["eof"] = True
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    st["eof"] = True
                response = final_response(st["buf"])
                if st["eof"] or (response is not None and response.status < 400):
                    active.remove(st)
            time.sleep(0.0005)  # pacing: one byte per connection per round
        assert not active, f"unfinished: {[st['case'].name for st in active]}"
        for st in states:
            try:
                check(st["case"], st["buf"], st["eof"])
            except AssertionError as error:
                failures.append(str(error))
    finally:
        for st in states:
            st["sock"].close()
    assert not failures, "\n".join(failures)


def test_the_worker_survived(server: Server) -> None:
    assert len(server.live_workers()) == 1
    assert "exited" not in server.output and "killed" not in server.output
