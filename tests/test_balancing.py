"""Fair balancing on the shared socket: requests served per worker, read from
the scoreboard, stay near the mean under keep-alive and connection-per-request
loads, with 2 and 8 workers; keep-alive connections split evenly.

The design's limit, 15% from the mean, is checked on a quiet machine in
bench/test_balancing.py. Here other work may keep both cores busy, and then the
scheduler, not the server, decides how much CPU each worker gets (25% from
the mean was seen so). The margin below holds then, and still fails what
balancing exists to prevent: one worker taking most of the connections (7.8
times the mean without the accept cap)."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import threading
import time

import pytest

from tailfast.status import read_status

TOLERANCE = 0.5


def requests_now(snapshot: dict) -> dict[int, int]:
    """pid -> requests answered, for the ready workers."""
    return {p["pid"]: p["requests"] for p in snapshot["processes"] if p["ready"]}


def open_now(snapshot: dict) -> int:
    return sum(p["open"] for p in snapshot["processes"] if p["ready"])


def served(server) -> dict[int, int]:
    """pid -> requests answered, for the ready workers."""
    return requests_now(read_status(pid=server.proc.pid))


def spread(before: dict[int, int], after: dict[int, int]) -> tuple[list[int], float]:
    counts = [after[pid] - before.get(pid, 0) for pid in sorted(after)]
    mean = sum(counts) / len(counts)
    worst = max(abs(c - mean) for c in counts) / mean if mean else float("inf")
    return counts, worst


def run_wrk(port: int, connections: int, close: bool, seconds: int = 4) -> str:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    if close:
        args += ["-H", "Connection: close"]
    proc = subprocess.run([*args, f"http://127.0.0.1:{port}/"], capture_output=True,
                          text=True, timeout=seconds + 20)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("workers", [2, 8])
@pytest.mark.parametrize("load", ["keepalive", "close"])
def test_requests_per_worker_near_the_mean(run_server, workers, load, threads):
    server = run_server("testapp:app", "--bind", ":0", "--workers", str(workers),
                        "--threads", str(threads))
    server.wait_ready(workers)
    before = served(server)
    # keep-alive: 64 connections opened at once; close: a connection per request
    result: list[str] = []
    wrk = threading.Thread(target=lambda: result.append(
        run_wrk(server.port, 64 if load == "keepalive" else 16, close=load == "close")))
    wrk.start()
    try:
        # sampled once every connection is open (keep-alive), or once requests flow
        if load == "keepalive":
            snapshot = server.wait_state(lambda s: open_now(s) >= 64, "64 connections open")
        else:
            snapshot = server.wait_state(lambda s: sum(requests_now(s).values())
                                         >= sum(before.values()) + 100, "requests served")
        opened = [p["open"] for p in snapshot["processes"] if p["ready"]]
    finally:
        wrk.join()
    assert result, "wrk failed"
    output = result[0]
    after = served(server)
    counts, worst = spread(before, after)
    total = sum(counts)
    print(f"\nbalance {load} {workers} workers, {threads} threads: {counts} total {total}, "
          f"worst {worst:.1%} from the mean; open connections sampled: {opened}")
    if load == "keepalive":
        # the accept cap's own result: the 64 connections split evenly
        assert max(opened) - min(opened) <= 1, opened
    assert len(after) == workers
    assert total > 500, output
    assert worst <= TOLERANCE, f"{counts}: {worst:.1%} from the mean\n{output}"


def test_connection_per_request_from_python_clients_is_spread(run_server):
    """Without wrk: threads each opening a connection per request."""
    server = run_server("testapp:app", "--bind", ":0", "--workers", "2")
    server.wait_ready(2)
    before = served(server)
    failures: list[BaseException] = []
    deadline = time.monotonic() + 2.0

    def client() -> None:
        for _ in range(2000):  # bounded in count and in time
            if time.monotonic() > deadline:
                return
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            try:
                conn.request("GET", "/")
                conn.getresponse().read()
            except BaseException as exc:  # noqa: BLE001 - counted, then asserted
                failures.append(exc)
            finally:
                conn.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts, worst = spread(before, served(server))
    print(f"\nbalance python close 2 workers: {counts}, worst {worst:.1%} from the mean")
    assert not failures
    assert sum(counts) > 200
    assert worst <= TOLERANCE, counts
