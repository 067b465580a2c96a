"""The CLI serves apps with real worker processes; handler return values and errors."""

from __future__ import annotations

import json
import socket
import threading

from conftest import http_request, raw_exchange


def test_cli_serves_the_example_app(run_server):
    server = run_server("examples.hello:app", "--bind", "127.0.0.1:0", "--workers", "2")
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    status, headers, body = http_request(server.port)
    assert (status, body) == (200, b"Hello, World!")
    assert headers["content-length"] == "13"
    assert headers["server"] == "tailfast"
    assert "date" in headers


def test_listening_line_names_mode_and_workers(run_server):
    server = run_server("testapp:app", "--bind", ":0", "-w", "3", "--env", "staging")
    assert server.workers == 3
    assert "(3 workers, staging)" in server.output
    assert len(server.live_workers()) == 3
    assert sorted(server.live_workers()) == [1, 2, 3]


def test_n_workers_really_serve(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "3")
    answers: list[str] = []
    lock = threading.Lock()

    def fetch() -> None:
        status, _, body = http_request(server.port, path="/slow?0.4")
        assert status == 200
        with lock:
            answers.append(body.decode().split()[1])

    threads = [threading.Thread(target=fetch) for _ in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(answers) == 9
    pids = {int(p) for p in answers}
    assert pids == set(server.live_workers().values())
    assert len(pids) == 3


def test_worker_id_and_pid_are_reported(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    _, _, body = http_request(server.port, path="/pid")
    pid, worker_id = body.decode().split()
    assert worker_id == "1"
    assert server.live_workers() == {1: int(pid)}


def test_keep_alive_serves_many_requests_on_one_connection(run_server):
    import http.client

    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for i in range(50):
            conn.request("POST", "/echo", body=f"body {i}".encode())
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == f"body {i}".encode()
            assert resp.getheader("X-Method") == "POST"
        assert conn.sock is not None  # never reopened: keep-alive held
    finally:
        conn.close()


def test_pipelined_requests_answered_in_order(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    requests = b"".join(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in (b"one", b"two", b"three")
    ) + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(server.port, requests)
    assert reply.count(b"HTTP/1.1 200 OK") == 4
    positions = [reply.index(word) for word in (b"\r\n\r\none", b"\r\n\r\ntwo", b"\r\n\r\nthree",
                                                 b"Hello, World!")]
    assert positions == sorted(positions)
    assert reply.endswith(b"Hello, World!")


def test_request_split_into_single_bytes(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    request = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
               b"Connection: close\r\n\r\nhello")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(request)):
            s.sendall(request[i:i + 1])
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nhello")
    assert b"Connection: close\r\n" in data


def test_http_1_0_closes_by_default_and_head_has_no_body(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    reply = raw_exchange(server.port, b"GET / HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\nHello, World!")
    reply = raw_exchange(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"Content-Length: 13\r\n" in reply
    assert reply.endswith(b"\r\n\r\n")


def test_return_values(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    status, headers, body = http_request(server.port, path="/json?a=1")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"method": "GET", "query": "a=1", "list": [1, 2]}
    status, headers, body = http_request(server.port, path="/list")
    assert (status, json.loads(body)) == (200, [1, "two"])
    status, headers, body = http_request(server.port, path="/pid")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    status, headers, body = http_request(server.port, path="/")
    assert headers["content-type"] == "application/octet-stream"
    status, headers, body = http_request(server.port, path="/none")
    assert (status, body) == (204, b"")
    assert "content-length" not in headers
    assert http_request(server.port, path="/tuple")[::2] == (201, b"created")
    status, headers, body = http_request(server.port, path="/tuple3")
    assert (status, body, headers["x-one"], headers["x-two"]) == (418, b"teapot", "1", "2")
    assert http_request(server.port, path="/nope")[::2] == (404, b"not found")


def test_request_attributes(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    status, _, body = http_request(server.port, path="/info?x=%41&y=2")
    info = json.loads(body)
    assert info["method"] == "GET"
    assert info["query_string"] == "x=%41&y=2"
    assert info["http_version"] == "HTTP/1.1"
    assert info["remote_addr"] == "127.0.0.1"
    assert info["worker_id"] == 1
    status, _, body = http_request(server.port, path="/inf%6F")
    assert json.loads(body)["raw_path"] == "/inf%6F"
    assert json.loads(body)["path"] == "/info"


def test_headers_are_case_insensitive_and_multi_valued(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    reply = raw_exchange(
        server.port,
        b"GET /headers HTTP/1.1\r\nHost: example.test\r\nX-Multi: a\r\naccept: */*\r\n"
        b"x-multi: b\r\nConnection: close\r\n\r\n",
    )
    body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert body == {"host": "example.test", "x-multi": ["a", "b"], "has_accept": True,
                    "missing": "default"}


def test_handler_exception_gives_500_and_worker_keeps_serving(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    pid_before = server.live_workers()[1]
    status, _, body = http_request(server.port, path="/raise")
    assert status == 500
    assert body == b"500 Internal Server Error\n"
    server.wait_for(r"tailfast: worker 1: error in handler for GET /raise")
    server.wait_for(r"RuntimeError: handler failed on purpose")
    assert http_request(server.port)[::2] == (200, b"Hello, World!")
    assert server.live_workers()[1] == pid_before


def test_invalid_responses_are_500_never_broken_on_the_wire(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    for path, message in (("/badheader", "contains CR, LF or NUL"),
                          ("/badstatus", "invalid status 42"),
                          ("/badtype", "cannot send a body of type int")):
        reply = raw_exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"), path
        assert b"Injected" not in reply
        server.wait_for(message)
    assert http_request(server.port)[0] == 200


def test_malformed_request_gets_400_and_server_keeps_serving(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    reply = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in reply
    reply = raw_exchange(server.port, b"\x16\x03\x01garbage\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert http_request(server.port)[0] == 200


def test_body_over_the_limit_is_413(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1",
                        "--limit-request-body", "100")
    status, _, body = http_request(server.port, method="POST", path="/echo", body=b"x" * 100)
    assert (status, body) == (200, b"x" * 100)
    reply = raw_exchange(server.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n"
                         b"\r\n" + b"x" * 101)
    assert reply.startswith(b"HTTP/1.1 413 ")


def test_chunked_request_body_is_decoded(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    reply = raw_exchange(
        server.port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\nhello, world")


def test_large_body_and_large_response(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    payload = bytes(range(256)) * 8192  # 2 MiB: several reads, partial writes
    status, _, body = http_request(server.port, method="POST", path="/echo", body=payload)
    assert status == 200
    assert body == payload


def test_remote_addr_of_every_digit_count(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    for source in ("127.100.20.3", "127.0.10.255", "127.9.99.0"):
        with socket.socket() as s:
            s.settimeout(5)
            s.bind((source, 0))
            s.connect(("127.0.0.1", server.port))
            s.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        info = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert info["remote_addr"] == source
