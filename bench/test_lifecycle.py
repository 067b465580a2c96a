"""Start-up time, respawn latency after SIGKILL, and memory (PSS) per process."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import time
from typing import Any

from bench.conftest import CPUS, env, record
from tailfast.bench.procstat import pss_kib
from tailfast.bench.server import STARTED, BenchServer


def first_response(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.001)
    raise AssertionError("no response")


def test_startup_time(benchmark: Any) -> None:
    """`tailfast run` to the first 200, with one worker per CPU."""
    times: list[float] = []

    def start() -> None:
        t0 = time.perf_counter()
        with BenchServer("bench.apps:native", len(CPUS), env=env()) as server:
            server.wait_ready()
            first_response(server.port)
            times.append(time.perf_counter() - t0)

    benchmark.pedantic(start, rounds=5, iterations=1)
    figures = {"median_s": statistics.median(times), "max_s": max(times)}
    benchmark.extra_info.update(figures)
    record("lifecycle", f"start-up to first response ({len(CPUS)} workers)", figures)


def test_respawn_latency(benchmark: Any) -> None:
    """SIGKILL to a worker -> its replacement logged as started (ready to accept).
    A fresh server per round: repeated kills of one server would measure the
    supervisor's crash-loop backoff instead."""
    times: list[float] = []

    def kill_one() -> None:
        with BenchServer("bench.apps:native", 2, env=env()).wait_ready() as server:
            first_response(server.port)
            with server._cond:
                pid = server.worker_pids[1]
                seen = len(server.lines)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            deadline = t0 + 10
            with server._cond:
                while True:
                    started = [STARTED.search(line) for line in server.lines[seen:]]
                    if any(m and int(m.group(1)) == 1 and int(m.group(2)) != pid
                           for m in started):
                        break
                    assert time.perf_counter() < deadline, "\n".join(server.lines[-10:])
                    server._cond.wait(0.001)
            times.append(time.perf_counter() - t0)
            first_response(server.port)

    benchmark.pedantic(kill_one, rounds=7, iterations=1)
    figures = {"median_ms": statistics.median(times) * 1e3, "max_ms": max(times) * 1e3}
    benchmark.extra_info.update(figures)
    record("lifecycle", "respawn after SIGKILL (to replacement started)", figures)


def test_memory_per_worker(benchmark: Any) -> None:
    """PSS of the primary and each worker, with 1 and N workers, after some requests."""
    from bench.conftest import load

    counts = sorted({1, max(2, len(CPUS))})
    figures: dict[str, Any] = {}

    def measure() -> None:
        for n in counts:
            with BenchServer("bench.apps:native", n, env=env()).wait_ready() as server:
                load(server.port, duration=0.5, connections=8)
                pss = {p: pss_kib(p) or 0 for p in server.pids()}
            workers = [kib for p, kib in pss.items() if p != server.pid]
            figures[f"{n}w_primary_kib"] = pss[server.pid]
            figures[f"{n}w_worker_kib"] = round(statistics.mean(workers))
            figures[f"{n}w_total_kib"] = sum(pss.values())

    benchmark.pedantic(measure, rounds=1, iterations=1)
    lo, hi = counts[0], counts[-1]
    figures["added_per_worker_kib"] = round(
        (figures[f"{hi}w_total_kib"] - figures[f"{lo}w_total_kib"]) / (hi - lo))
    benchmark.extra_info.update(figures)
    record("memory", "PSS", figures)
    assert figures["1w_worker_kib"] > 0 and figures["1w_primary_kib"] > 0
