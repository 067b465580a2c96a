"""Findings of the issue-15 audit, seen from a client: real servers, raw sockets on 127.0.0.1."""

from __future__ import annotations

import socket
import time

from conftest import cpu_seconds, raw_exchange

# Small limits, so that each is reached with a few hundred bytes.
LIMIT_ARGS = [
    "--limit-request-line", "256",
    "--limit-request-fields", "20",
    "--limit-request-field-size", "256",
    "--limit-request-body", "4096",
]


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def head_only(reply: bytes) -> tuple[int, dict[str, str]]:
    """The status and headers of the one response in reply, which must carry no
    body (nothing after the blank line)."""
    head, sep, rest = reply.partition(b"\r\n\r\n")
    assert sep, f"no complete head in {reply!r}"
    assert rest == b"", f"a HEAD answer with {len(rest)} body bytes: {reply!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, value = line.split(":", 1)
        headers[name.lower()] = value.strip()
    return int(lines[0].split(" ")[1]), headers


# ------------------------------------------------------ errors answering HEAD

HEAD_ERRORS = [
    (b"HEAD /url HTTP/1.1\r\n\r\n", 400),  # no Host: the audit's case
    (b"\r\nHEAD / HTTP/2.0\r\nHost: h\r\n\r\n", 505),  # after a skipped empty line
    (b"HEAD /" + b"a" * 300 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"HEAD / HTTP/1.1\r\nHost: h\r\n" + b"X-A: b\r\n" * 30 + b"\r\n", 431),
    (b"HEAD / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999\r\n\r\n", 413),
    (b"HEAD / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", 417),
    (b"HEAD / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
]


def test_error_responses_to_head_carry_no_body(run_server):
    server = run_server("protoapp:app", "--bind", "127.0.0.1:0", "--workers", "1", *LIMIT_ARGS)
    for data, status in HEAD_ERRORS:
        got, headers = head_only(raw_exchange(server.port, data))
        assert got == status, data
        # the length a GET would have had may be stated
        assert int(headers["content-length"]) > 0
        assert headers["connection"] == "close"
    # the same errors to a GET still carry their text
    reply = raw_exchange(server.port, b"GET /url HTTP/1.1\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.endswith(b"\r\n\r\n400 Bad Request\n")


def test_a_head_that_times_out_gets_408_without_a_body(run_server):
    server = run_server("protoapp:app", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--header-timeout", "0.5")
    for data in (b"HEAD / HTTP/1.1\r\nHost: h\r\n",  # a head that never ends
                 # a HEAD after a served request on the same connection
                 b"GET / HTTP/1.1\r\nHost: h\r\n\r\nHEAD / HTTP/1.1\r\nHost"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(data)
            reply = read_to_eof(s)
        if data.startswith(b"GET"):
            first, _, reply = reply.partition(b"\r\n\r\n")
            assert first.startswith(b"HTTP/1.1 200 ")
            reply = reply[int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):]
        assert head_only(reply)[0] == 408


# ------------------------------------------------------- accept errors


def test_an_accept_error_outside_the_handled_set_neither_spins_nor_floods_the_log(run_server):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    fd = listener.fileno()
    try:
        server = run_server("protoapp:app", "--fd", str(fd), "--workers", "1",
                            "--keepalive-timeout", "60", pass_fds=(fd,))
        (pid,) = server.live_workers().values()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as kept:
            kept.sendall(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
            assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
            # from outside the server: accept() now fails with EINVAL, and
            # the listener stays ready for epoll
            listener.shutdown(socket.SHUT_RDWR)
            server.wait_for(r"accept: Invalid argument", timeout=5)
            before = cpu_seconds(pid)
            time.sleep(2.0)
            spent = cpu_seconds(pid) - before
            # a spinning worker takes a core (or its share of a busy machine)
            assert spent < 0.2, f"the worker spun: {spent:.2f} s of CPU in 2 s"
            lines = [line for line in server.output.splitlines() if "accept:" in line]
            assert len(lines) == 1, f"{len(lines)} accept lines, the first: {lines[:3]}"
            # the connections it has are still served
            kept.sendall(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
            assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")
        assert list(server.live_workers().values()) == [pid]
    finally:
        listener.close()


# ------------------------------------------------------- body buffers


def vm_kib(pid: int, field: str) -> int:
    """A VmXxx: line of /proc/<pid>/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def test_an_announced_body_is_not_buffered_before_it_arrives(run_server):
    # default limits: bodies up to 16 MiB; four runner threads, so that all four
    # handlers wait for their bodies at once
    server = run_server("protoapp:app", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--threads", "4")
    (pid,) = server.live_workers().values()
    size = 16 << 20
    head = (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % size)
    rss, data = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmData")
    socks = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(head)
            # "100 Continue" is sent once the application asks for the body
            assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
            socks.append(s)
        # VmData: what malloc reserved (untouched pages do not show in VmRSS
        # yet); both must stay far below 4 x 16 MiB
        grown_data = vm_kib(pid, "VmData") - data
        grown_rss = vm_kib(pid, "VmRSS") - rss
        assert grown_data < 8 * 1024, f"VmData grew by {grown_data} KiB before any body byte"
        assert grown_rss < 8 * 1024, f"VmRSS grew by {grown_rss} KiB before any body byte"
        # the body, when it comes, is read whole
        body = bytes(range(256)) * (size // 256)
        socks[0].sendall(body)
        reply = read_to_eof_or_length(socks[0], size)
        assert reply.startswith(b"HTTP/1.1 200 ") and b"\r\nX-Body-Length: %d\r\n" % size in reply
        assert reply.endswith(body[-1000:])
    finally:
        for s in socks:
            s.close()


def read_to_eof_or_length(sock: socket.socket, length: int) -> bytes:
    """One response whose body is length bytes (or what came before EOF)."""
    buf = b""
    while b"\r\n\r\n" not in buf or len(buf.partition(b"\r\n\r\n")[2]) < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return buf


def test_a_worker_caps_what_its_connections_buffer(run_server):
    # limits of 64 KiB bodies and small heads: the cap is 32 x (a head of
    # 2 x (258 + 20 x 258 + 2) bytes + a body of 64 KiB) = 2,444,032 bytes
    server = run_server("protoapp:app", "--bind", "127.0.0.1:0", "--workers", "1",
                        "--limit-request-line", "256", "--limit-request-fields", "20",
                        "--limit-request-field-size", "256", "--limit-request-body", "65536")
    size = 65536
    head = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size
    socks = []
    try:
        for _ in range(48):  # 48 bodies of 64 KiB in flight at once: 3 MiB
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(head + b"x" * (size - 100))
            socks.append(s)
        server.wait_for(r"input buffers at the cap \(2444032 bytes\); 503", timeout=5)
        refused = served = 0
        for s in socks:
            try:
                s.sendall(b"x" * 100)
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered 503 already
            reply = read_to_eof_or_length(s, size)
            if reply.startswith(b"HTTP/1.1 503 "):
                refused += 1
                assert b"Connection: close" in reply, reply
            else:
                assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
                assert b"\r\nX-Body-Length: %d\r\n" % size in reply
                served += 1
        print(f"{served} served, {refused} refused")
        # 32 requests of the largest size fit (42 of these); 48 do not
        assert refused >= 1 and served >= 32, (served, refused)
    finally:
        for s in socks:
            s.close()
    # the room comes back once those connections are gone
    for _ in range(16):
        reply = raw_exchange(server.port, head + b"y" * size)
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
