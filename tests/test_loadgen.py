"""The C load generator (`tailfast bench load`) against real tailfast servers."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading

import pytest
from conftest import http_request, server_env

from tailfast import _bench
from tailfast.bench.load import run_load


def stats(port: int) -> dict[str, int]:
    """Requests counted by each worker of tests/apps/countapp.py."""
    status, _, body = http_request(port, path="/stats")
    assert status == 200
    return json.loads(body)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = server_env()
    return subprocess.run([sys.executable, "-m", "tailfast", "bench", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("mode", ["keep-alive", "close", "pipeline"])
def test_counts_match_what_the_server_served(run_server, mode: str) -> None:
    server = run_server("countapp:app", "--workers", "2", "--bind", "127.0.0.1:0")
    connections, pipeline = 8, (4 if mode == "pipeline" else 1)
    result = run_load(f"http://127.0.0.1:{server.port}/hit", connections=connections,
                      duration=1.0, threads=2, close=mode == "close", pipeline=pipeline)
    served = sum(stats(server.port).values())
    assert result["errors_total"] == 0, result["errors"]
    assert result["requests"] > 100
    assert result["status"]["2xx"] == result["requests"]
    # Requests in flight at the deadline were served but not counted by the
    # generator: at most one batch per connection.
    assert 0 <= served - result["requests"] <= connections * pipeline, (served, result["requests"])
    if mode == "close":
        assert result["connects"] >= result["requests"]
    else:
        assert result["connects"] == connections
    body_len = len(b"worker 1")
    assert result["bytes_read"] >= result["requests"] * body_len
    lat = result["latency_ns"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]


def test_non_2xx_counted_as_status_errors(run_server) -> None:
    server = run_server("countapp:app", "--workers", "1", "--bind", "127.0.0.1:0")
    result = run_load(f"http://127.0.0.1:{server.port}/missing", connections=4, duration=0.5)
    assert result["requests"] > 0
    assert result["errors"]["status"] == result["requests"] == result["status"]["4xx"]
    assert result["errors"]["connect"] == result["errors"]["read"] == 0


def test_connect_refused_counted() -> None:
    # A port that was just free: bound, then closed, so nothing listens on it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_load(f"http://127.0.0.1:{port}/", connections=2, duration=0.3)
    assert result["requests"] == 0
    assert result["errors"]["connect"] >= 2
    # Retried once per 20 ms tick per connection, not in a busy loop.
    assert result["errors"]["connect"] <= 2 * (0.3 / 0.02 + 2)


def test_timeout_counted(run_server) -> None:
    server = run_server("testapp:app", "--workers", "1", "--bind", "127.0.0.1:0")
    # The handler sleeps 3 s; the first timeout is due at 0.3 s, the run lasts
    # 1.5 s so a briefly starved generator thread still sees it.
    result = run_load(f"http://127.0.0.1:{server.port}/slow?3", connections=1, duration=1.5,
                      timeout=0.3)
    assert result["requests"] == 0, result
    assert result["errors"]["timeout"] >= 1, result["errors"]


def test_histogram_buckets_are_within_one_64th() -> None:
    for value in [0, 1, 31, 32, 33, 63, 64, 1000, 123_456, 10**9, 2**40 + 12345]:
        index, mid = _bench.load_hist_bucket(value)
        assert abs(mid - value) <= max(value / 64, 0.5), (value, mid)
    # Buckets increase with the value.
    indexes = [_bench.load_hist_bucket(v)[0] for v in range(0, 5000, 7)]
    assert indexes == sorted(indexes)


def test_cli_json_shape(run_server, tmp_path) -> None:
    server = run_server("testapp:app", "--workers", "1", "--bind", "127.0.0.1:0")
    body = tmp_path / "body"
    body.write_bytes(b"ping" * 10)
    proc = cli("load", f"http://127.0.0.1:{server.port}/echo", "-c", "4", "-d", "0.5",
               "--method", "POST", "--header", "X-Test: 1", "--body-file", str(body), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) >= {"requests", "requests_per_sec", "bytes_per_sec", "latency_ns",
                           "errors", "status", "settings", "histogram", "elapsed"}
    assert set(result["errors"]) == {"connect", "read", "write", "timeout", "status"}
    assert set(result["latency_ns"]) >= {"p50", "p90", "p99", "p99.9", "max"}
    assert result["settings"]["method"] == "POST"
    assert result["requests"] > 0 and result["errors_total"] == 0
    # The echo app sends the 40-byte body back in every response.
    assert result["bytes_read"] >= 40 * result["requests"]
    assert sum(count for _, count in result["histogram"]) == result["requests"]


def test_cli_text_output_and_bad_url() -> None:
    proc = cli("load", "https://127.0.0.1:1/", "-d", "0.1")
    assert proc.returncode == 2
    assert "only http://" in proc.stderr and "Traceback" not in proc.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = cli("load", f"http://127.0.0.1:{port}/", "-d", "0.2", "-c", "1")
    assert proc.returncode == 0, proc.stderr
    assert "requests/s" in proc.stdout and re.search(r"connect [1-9]", proc.stdout)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.skipif(shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2
                    or not {0, 1} <= os.sched_getaffinity(0), reason="needs CPUs 0 and 1")
def test_same_figure_as_wrk(run_server) -> None:
    """wrk and tailfast's generator load the same server at the same time, 16
    connections each, for the same 2 s. The server (one worker on CPU 0, a
    handler costing ~50 us) is the bottleneck and serves every connection
    alike, so each generator must report the same share. Running them side by
    side, not one after the other, keeps the other load on this shared machine
    from deciding the result: it slows both equally. The median of three such
    runs is compared, so one run where the scheduler favoured one of them
    does not decide it either."""
    server = run_server("countapp:app", "--workers", "1", "--bind", "127.0.0.1:0",
                        prefix=["taskset", "-c", "0"])
    url = f"http://127.0.0.1:{server.port}/spin"
    pairs = [_side_by_side(url, seconds=2) for _ in range(3)]
    ratios = sorted(ours / wrk for ours, wrk in pairs)
    # 0.96 to 1.06 measured with both cores busy; a wider band for the busier
    # moments of a shared machine, still far tighter than a miscount
    assert 0.85 <= ratios[1] <= 1.15, f"tailfast vs wrk requests/s: {pairs}"


def _side_by_side(url: str, seconds: int) -> tuple[float, float]:
    wrk = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds}s", url],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {1})
        try:
            ours = run_load(url, connections=16, threads=1, duration=float(seconds))
        finally:
            os.sched_setaffinity(0, before)
        out, err = wrk.communicate(timeout=30)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    assert wrk.returncode == 0, err
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    assert ours["errors_total"] == 0, ours["errors"]
    return round(ours["requests_per_sec"]), float(match.group(1))


def test_request_bytes() -> None:
    from tailfast.bench.load import BenchError, build_request, parse_url

    assert parse_url("http://localhost:8080/a?b=1") == ("localhost", "8080", "/a?b=1",
                                                        "localhost:8080")
    assert parse_url("127.0.0.1") == ("127.0.0.1", "80", "/", "127.0.0.1")
    req = build_request("POST", "/x", "h:1", ["X-A: 1", "host: other"], b"abc", close=True)
    assert req == (b"POST /x HTTP/1.1\r\nHost: other\r\nX-A: 1\r\nContent-Length: 3\r\n"
                   b"Connection: close\r\n\r\nabc")
    with pytest.raises(BenchError):
        build_request("GET", "/", "h", ["no colon"], None, close=False)
    with pytest.raises(BenchError):
        build_request("GET", "/", "h", ["X: a\r\nY: b"], None, close=False)


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n1A\r\n" + b"x" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
UNTIL_CLOSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close"


def _canned_server(response: bytes, served: list[int]) -> tuple[socket.socket, threading.Thread]:
    """A plain socket server answering each request head with `response`
    (closing after it when it has no length), counting what it answered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            buf = b""
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    try:
                        conn.sendall(response)
                    except OSError:
                        return
                    served.append(1)
                    if response is UNTIL_CLOSE:
                        return

    def accept_loop() -> None:
        threads = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            t = threading.Thread(target=serve, args=(conn,), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            t.join(5)

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    thread.stop = stop  # type: ignore[attr-defined]
    return listener, thread


@pytest.mark.parametrize("response", [CHUNKED, UNTIL_CLOSE], ids=["chunked", "until-close"])
def test_response_framings(response: bytes) -> None:
    """Chunked bodies (with an extension and a trailer) and bodies that end at
    close are read whole: every answered request counts, none is an error."""
    served: list[int] = []
    listener, thread = _canned_server(response, served)
    try:
        port = listener.getsockname()[1]
        result = run_load(f"http://127.0.0.1:{port}/", connections=4, pipeline=1, duration=0.5)
    finally:
        thread.stop.set()  # type: ignore[attr-defined]
        thread.join(10)
        listener.close()
    assert result["requests"] > 10
    assert result["errors_total"] == 0, result["errors"]
    assert 0 <= len(served) - result["requests"] <= 4
    if response is UNTIL_CLOSE:
        assert result["connects"] >= result["requests"]
    else:
        assert result["connects"] == 4
    assert result["bytes_read"] >= result["requests"] * len(response)
