"""Requests/s of the same hello-world app on one pinned core: tailfast and its peers."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest

from bench.conftest import ROUNDS, load, record, start_server
from tailfast.bench.procstat import cpu_seconds, process_tree

SERVERS = ["tailfast", "tailfast-wsgi", "gunicorn", "bjoern", "uvicorn-httptools", "nginx"]


@pytest.mark.parametrize("kind", SERVERS)
def test_throughput(benchmark: Any, bench_tmp: Path, kind: str) -> None:
    server, port = start_server(kind, bench_tmp)
    try:
        load(port, duration=1.0)  # warm-up
        pids = process_tree(server.proc.pid)
        runs: list[dict[str, Any]] = []

        def one() -> None:
            before = sum(cpu_seconds(p) for p in pids)
            result = load(port)
            result["cpu"] = sum(cpu_seconds(p) for p in pids) - before
            runs.append(result)

        benchmark.pedantic(one, rounds=ROUNDS, iterations=1)
    finally:
        server.stop()
    rates = [r["requests_per_sec"] for r in runs]
    best = runs[rates.index(statistics.median_low(rates))]
    figures = {
        "requests_per_sec": best["requests_per_sec"],
        "p50_ms": best["latency_ns"]["p50"] / 1e6,
        "p99_ms": best["latency_ns"]["p99"] / 1e6,
        "errors": best["errors_total"],
        "server_cpu_s": best["cpu"],
        # Unlike requests/s, this does not depend on how much of its core the
        # server got while other processes ran.
        "requests_per_cpu_s": best["requests"] / best["cpu"] if best["cpu"] else 0.0,
        "runs": rates,
    }
    benchmark.extra_info.update(figures)
    record("throughput", kind, figures)
    assert best["requests"] > 0
