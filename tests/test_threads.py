"""--threads: requests run on runner threads while the worker's loop serves everyone else."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from conftest import http_request

from tailfast.metrics import render


def _parallel(calls: list[Callable[[], object]]) -> list[object]:
    """Runs each call on its own thread; returns their results in order."""
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - a failure is a result to assert on
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _get(port: int, path: str, timeout: float = 15.0) -> tuple[int, bytes, float]:
    start = time.monotonic()
    status, _, body = http_request(port, "GET", path, timeout=timeout)
    return status, body, time.monotonic() - start


def _in_flight(snapshot: dict, count: int) -> bool:
    return sum(p["in_flight"] for p in snapshot["processes"]) >= count


def test_waits_overlap_on_threads(run_server):
    server = run_server("threadapp:app", "--bind", ":0", "--workers", "1", "--threads", "8")
    start = time.monotonic()
    results = _parallel([lambda: _get(server.port, "/sleep?s=0.5")] * 8)
    elapsed = time.monotonic() - start
    assert all(r[0] == 200 for r in results), results
    # serial would be 4 s; on threads the eight waits overlap
    assert elapsed < 2.5, elapsed
    names = {r[1] for r in results}
    assert len(names) > 1 and all(n.startswith(b"tailfast-runner-") for n in names), names


def test_other_requests_answered_while_one_runs_for_seconds(run_server):
    server = run_server("threadapp:app", "--bind", ":0", "--workers", "1", "--threads", "4",
                        "--metrics-path", "/metrics")
    slow = _parallel_async(lambda: _get(server.port, "/sleep?s=3"))
    snapshot = server.wait_state(
        lambda s: _in_flight(s, 1) and s["processes"][0]["threads_busy"] == 1,
        "a request in flight on a runner thread")
    proc = snapshot["processes"][0]
    assert proc["threads"] == 4 and proc["threads_busy"] == 1 and proc["state"] == "idle"
    assert "tailfast_threads_busy{worker=\"1\"} 1" in render(snapshot)
    for _ in range(10):
        status, body, seconds = _get(server.port, "/who")
        assert status == 200 and seconds < 1.0, (status, seconds)
    slow.join(15)
    assert slow.result[0] == 200


class _Async(threading.Thread):
    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__()
        self.call = call
        self.result: object = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except Exception as exc:  # noqa: BLE001
            self.result = exc


def _parallel_async(call: Callable[[], object]) -> _Async:
    t = _Async(call)
    t.start()
    return t


def test_timeout_raised_in_the_thread_that_overran(run_server):
    server = run_server("threadapp:app", "--bind", ":0", "--workers", "1", "--threads", "4",
                        "--timeout", "1", "--timeout-grace", "5")
    pid = server.wait_ready()["processes"][0]["pid"]
    spin = _parallel_async(lambda: _get(server.port, "/spin?s=4"))
    server.wait_state(lambda s: _in_flight(s, 1), "the spinning request in flight")
    # the others keep being answered meanwhile, on the other threads
    assert _get(server.port, "/who")[0] == 200
    spin.join(15)
    status, body, seconds = spin.result
    assert status == 503 and seconds < 3.5, (status, body, seconds)
    status, body, _ = _get(server.port, "/timed-out")
    assert body.startswith(b"tailfast-runner-"), body
    assert server.wait_ready()["processes"][0]["pid"] == pid  # the worker lives on
    server.wait_for("ran past --timeout 1 s on a runner thread")


def _stop_with_requests_in_flight(run_server, sig: int) -> None:
    server = run_server("threadapp:app", "--bind", ":0", "--workers", "1", "--threads", "4")
    old = server.wait_ready()["processes"][0]["pid"]
    waits = [_parallel_async(lambda: _get(server.port, "/sleep?s=1")) for _ in range(4)]
    server.wait_state(lambda s: _in_flight(s, 4), "4 requests in flight")
    server.signal(sig)
    for t in waits:
        t.join(15)
    assert [t.result[0] if isinstance(t.result, tuple) else t.result for t in waits] == [200] * 4
    if sig == signal.SIGHUP:
        server.wait_replaced(1, old)
        assert _get(server.port, "/who")[0] == 200
    else:
        assert server.wait(15) == 0


def test_graceful_stop_waits_for_threads(run_server):
    _stop_with_requests_in_flight(run_server, signal.SIGTERM)


def test_sighup_waits_for_threads(run_server):
    _stop_with_requests_in_flight(run_server, signal.SIGHUP)


def test_max_requests_with_threads(run_server):
    server = run_server("threadapp:app", "--bind", ":0", "--workers", "1", "--threads", "4",
                        "--max-requests", "10")
    first = server.wait_ready()["processes"][0]["pid"]
    results = []
    for _ in range(4):
        results += _parallel([lambda: _get(server.port, "/sleep?s=0.05")] * 8)
    assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results
    server.wait_replaced(1, first)


def test_flask_app_under_threads(run_server):
    server = run_server("flaskapp:app", "--bind", ":0", "--workers", "1", "--threads", "4")
    results = _parallel([lambda: _get(server.port, "/")] * 8
                        + [lambda: _get(server.port, "/user/ada?q=1")] * 8)
    assert all(r[0] == 200 for r in results), results
    assert results[0][1] == b"hello from flask"
    assert b'"name":"ada"' in results[-1][1].replace(b" ", b"")


def test_thread_stuck_in_c_gets_its_worker_killed(run_server):
    server = run_server("threadapp:app", "--bind", ":0", "--workers", "1", "--threads", "4",
                        "--timeout", "1", "--timeout-grace", "1")
    pid = server.wait_ready()["processes"][0]["pid"]
    # time.sleep in a thread does not see RequestTimeout: the primary's kill is the backstop
    stuck = _parallel_async(lambda: _get(server.port, "/sleep?s=30", timeout=20))
    server.wait_state(lambda s: _in_flight(s, 1), "the stuck request in flight")
    server.wait_replaced(1, pid, timeout=10)
    stuck.join(20)
    assert not isinstance(stuck.result, tuple) or stuck.result[0] != 200, stuck.result
    server.wait_for("stuck where no signal reaches it; killing the worker")
    assert _get(server.port, "/who")[0] == 200
