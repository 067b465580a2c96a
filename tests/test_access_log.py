"""The access log: formats, buffering in the workers, reopening on SIGUSR1."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, Server, http_request, server_env, wait_until

COMBINED = re.compile(
    r'^(?P<host>\S+) - - \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<seconds>\d+\.\d{6})$'
)
COMMON = re.compile(
    r'^(?P<host>\S+) - - \[[^\]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'(?P<seconds>\d+\.\d{6})$'
)


def read_lines(path: Path, count: int, timeout: float = 5.0) -> list[str]:
    """The file's lines once it has at least count of them."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)  # polling the file


def opened(pid: int, path: Path) -> bool:
    """True when pid holds a descriptor open on path (by its current name)."""
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        try:
            if os.readlink(f"{fds}/{fd}") == str(path):
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def test_combined_format_with_request_time(run_server, tmp_path):
    log = tmp_path / "access.log"
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "2",
                        "--access-log", str(log))
    http_request(server.port, path="/status/404?x=1",
                 headers={"Referer": "http://example.test/", "User-Agent": 'agent "quoted"'})
    http_request(server.port, "POST", "/", body=b"12345")
    http_request(server.port, path="/slow?0.2")
    lines = read_lines(log, 3)
    assert len(lines) == 3, lines
    parsed = {m["request"]: m for m in map(COMBINED.match, lines) if m}
    assert len(parsed) == 3, lines
    first = parsed["GET /status/404?x=1 HTTP/1.1"]
    assert (first["host"], first["status"], first["bytes"]) == ("127.0.0.1", "404", "-")
    assert first["referer"] == "http://example.test/"
    assert first["agent"] == r"agent \x22quoted\x22"  # a header cannot forge a field
    post = parsed["POST / HTTP/1.1"]
    assert (post["status"], post["bytes"]) == ("200", "2")
    assert post["referer"] == "-" and post["agent"] == "-"  # http.client sends neither
    slow = parsed["GET /slow?0.2 HTTP/1.1"]
    assert 0.2 <= float(slow["seconds"]) < 1.0
    assert float(post["seconds"]) < 0.2


def test_common_format_and_parse_errors(run_server, tmp_path):
    log = tmp_path / "access.log"
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "1",
                        "--access-log", str(log), "--access-log-format", "common")
    http_request(server.port, path="/")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"BAD\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    lines = read_lines(log, 2)
    matches = [COMMON.match(line) for line in lines]
    assert all(matches) and len(matches) == 2, lines
    assert (matches[0]["request"], matches[0]["status"], matches[0]["bytes"]) == (
        "GET / HTTP/1.1", "200", "2")
    assert (matches[1]["request"], matches[1]["status"]) == ("-", "400")


def test_lines_are_buffered_and_flushed_within_seconds_and_at_exit(run_server, tmp_path):
    log = tmp_path / "access.log"
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "1",
                        "--access-log", str(log))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        for _ in range(50):  # keep-alive: one worker, one loop, a burst of lines
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while not data.endswith(b"ok"):
                data += s.recv(4096)
    # buffered: not written line by line (the first flush is a second away)
    assert len(read_lines(log, 50, timeout=0.2)) < 50
    started = time.monotonic()
    assert len(read_lines(log, 50, timeout=5)) == 50
    assert time.monotonic() - started < 3.5
    for _ in range(5):
        http_request(server.port, path="/last")
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 55 and all(COMBINED.match(line) for line in lines)


def test_sigusr1_reopens_the_log_after_rotation(run_server, tmp_path):
    log = tmp_path / "access.log"
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "2",
                        "--access-log", str(log))
    for _ in range(4):
        http_request(server.port, path="/before")
    assert len(read_lines(log, 4)) == 4
    rotated = tmp_path / "access.log.1"
    log.rename(rotated)
    server.signal(signal.SIGUSR1)
    server.wait_for("SIGUSR1: reopening the access logs")
    # each worker's loop reopens within a second: its descriptor names the new file
    workers = server.live_workers().values()
    assert wait_until(lambda: all(opened(pid, log) for pid in workers), timeout=5)
    for _ in range(4):
        http_request(server.port, path="/after")
    lines = read_lines(log, 4)
    assert len(lines) == 4 and all('"GET /after HTTP/1.1"' in line for line in lines)
    old = rotated.read_text().splitlines()
    assert len(old) == 4 and all('"GET /before HTTP/1.1"' in line for line in old)
    assert "killed by signal" not in server.output
    assert len(server.live_workers()) == 2


def test_sigusr1_without_an_access_log_harms_no_worker(run_server):
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "2")
    workers = server.live_workers()
    server.signal(signal.SIGUSR1)
    server.wait_for("SIGUSR1")
    time.sleep(0.3)  # a window for harm to show: the primary signals after it logs
    assert http_request(server.port, path="/")[0] == 200
    assert server.live_workers() == workers and "killed by signal" not in server.output


def test_access_log_to_standard_output():
    server = Server(["deployapp:status_app", "--bind", ":0", "--workers", "2",
                     "--access-log", "-"])
    with server:
        server.wait_listening()
        for i in range(20):
            http_request(server.port, path=f"/n{i}")
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
    lines = server.stdout_lines
    assert sorted(COMBINED.match(line)["request"] for line in lines) == sorted(
        f"GET /n{i} HTTP/1.1" for i in range(20))


def test_unwritable_access_log_is_a_configuration_error(tmp_path):
    env = server_env()
    result = subprocess.run(
        [sys.executable, "-m", "tailfast", "run", "deployapp:status_app", "--bind", ":0",
         "--access-log", str(tmp_path / "missing" / "access.log")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=30,
    )
    assert result.returncode == 2
    assert "access_log" in result.stderr and "Traceback" not in result.stderr
