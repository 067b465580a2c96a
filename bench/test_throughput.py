"""Requests/s of the same hello-world app on one pinned core: tailfast and its peers."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest

from bench.conftest import ROUNDS, load, record, start_server

SERVERS = ["tailfast", "tailfast-wsgi", "gunicorn", "bjoern", "uvicorn-httptools", "nginx"]


@pytest.mark.parametrize("kind", SERVERS)
def test_throughput(benchmark: Any, bench_tmp: Path, kind: str) -> None:
    server, port = start_server(kind, bench_tmp)
    try:
        load(port, duration=1.0)  # warm-up
        runs: list[dict[str, Any]] = []
        benchmark.pedantic(lambda: runs.append(load(port)), rounds=ROUNDS, iterations=1)
    finally:
        server.stop()
    rates = [r["requests_per_sec"] for r in runs]
    best = runs[rates.index(statistics.median_low(rates))]
    figures = {
        "requests_per_sec": best["requests_per_sec"],
        "p50_ms": best["latency_ns"]["p50"] / 1e6,
        "p99_ms": best["latency_ns"]["p99"] / 1e6,
        "errors": best["errors_total"],
        "runs": rates,
    }
    benchmark.extra_info.update(figures)
    record("throughput", kind, figures)
    assert best["requests"] > 0
