"""tailfast from 1 to N workers (N = usable CPUs), as `tailfast bench speedup` does."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from bench.conftest import CPUS, DURATION, ROUNDS, env, record
from tailfast.bench.load import run_load
from tailfast.bench.procstat import cpu_seconds
from tailfast.bench.server import BenchServer


@pytest.mark.parametrize("workers", sorted({1, 2, len(CPUS)}))
def test_scaling(benchmark: Any, workers: int) -> None:
    if workers > len(CPUS):
        pytest.skip(f"only {len(CPUS)} CPU(s)")
    # Unpinned: with as many workers as CPUs, the generator has to share them.
    with BenchServer("bench.apps:native", workers, env=env()).wait_ready() as server:
        url = f"http://127.0.0.1:{server.port}/"
        run_load(url, connections=64, duration=1.0)
        runs: list[dict[str, Any]] = []

        def one() -> None:
            before = sum(cpu_seconds(p) for p in server.pids())
            result = run_load(url, connections=64, duration=DURATION)
            result["cpu"] = sum(cpu_seconds(p) for p in server.pids()) - before
            runs.append(result)

        benchmark.pedantic(one, rounds=ROUNDS, iterations=1)
    rates = [r["requests_per_sec"] for r in runs]
    mid = runs[rates.index(statistics.median_low(rates))]
    figures = {
        "requests_per_sec": mid["requests_per_sec"],
        "server_cpu_s": mid["cpu"],
        "requests_per_cpu_s": mid["requests"] / mid["cpu"] if mid["cpu"] else 0.0,
        "p99_ms": mid["latency_ns"]["p99"] / 1e6,
    }
    base = benchmark_base(figures, workers)
    if base:
        figures["speedup"] = figures["requests_per_sec"] / base
    benchmark.extra_info.update(figures)
    record("scaling", f"{workers} worker(s)", figures)
    assert mid["requests"] > 0 and mid["errors_total"] == 0


def benchmark_base(figures: dict[str, Any], workers: int) -> float | None:
    from bench.conftest import RESULTS

    if workers == 1:
        return None
    one = RESULTS.get("scaling", {}).get("1 worker(s)")
    return one["requests_per_sec"] if one else None
