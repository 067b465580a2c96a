"""Servers and load for bench/: each server pinned to one CPU, the generator on another.

Every server runs the same hello-world app (bench/apps.py); peers are used when
installed and skipped otherwise. Results are collected and printed as one
ratio table at the end of the session.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from bench.peers import Peer, free_port, nginx_command
from tailfast.bench.load import run_load
from tailfast.bench.server import BenchServer
from tailfast.testing import server_env

ROOT = Path(__file__).resolve().parent.parent
CPUS = sorted(os.sched_getaffinity(0))
# One core for the server, one for the generator when there are two.
SERVER_CPUS = CPUS[:1]
LOAD_CPUS = CPUS[1:2] or CPUS[:1]
DURATION = float(os.environ.get("BENCH_DURATION", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))

RESULTS: dict[str, dict[str, Any]] = {}


def env() -> dict[str, str]:
    """Every server's environment: the harness's, with this tree first on the path."""
    return server_env()


def start_server(kind: str, tmp: Path) -> tuple[Any, int]:
    """(handle with .stop(), port) for one of the servers compared."""
    if kind == "tailfast":
        s = BenchServer("bench.apps:native", 1, SERVER_CPUS, env=env()).wait_ready()
        return s, s.port
    if kind == "tailfast-wsgi":
        s = BenchServer("bench.apps:wsgi", 1, SERVER_CPUS, extra=["--interface", "wsgi"],
                        env=env()).wait_ready()
        return s, s.port
    port = free_port()
    if kind == "gunicorn":
        if find_spec("gunicorn") is None:
            pytest.skip("gunicorn is not installed (pip install '.[bench]')")
        return Peer([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
                     "--log-level", "warning", "bench.apps:wsgi"], port, SERVER_CPUS), port
    if kind == "bjoern":
        if find_spec("bjoern") is None:
            pytest.skip("bjoern is not installed (apt-get install libev-dev; pip install bjoern)")
        code = f"import bjoern; from bench.apps import wsgi; bjoern.run(wsgi, '127.0.0.1', {port})"
        return Peer([sys.executable, "-c", code], port, SERVER_CPUS), port
    if kind == "uvicorn-httptools":
        if find_spec("uvicorn") is None or find_spec("httptools") is None:
            pytest.skip("uvicorn and httptools are not installed (pip install '.[bench]')")
        return Peer([sys.executable, "-m", "uvicorn", "bench.apps:asgi", "--http", "httptools",
                     "--port", str(port), "--log-level", "warning", "--no-access-log"],
                    port, SERVER_CPUS), port
    if kind == "nginx":
        command = nginx_command(tmp, port)
        if command is None:
            pytest.skip("nginx is not installed (apt-get install nginx-light)")
        return Peer(command, port, SERVER_CPUS), port
    raise ValueError(kind)


def load(port: int, duration: float = DURATION, connections: int = CONNECTIONS,
         path: str = "/") -> dict[str, Any]:
    """The C generator on LOAD_CPUS (this thread's affinity, inherited by its threads)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(LOAD_CPUS))
    try:
        return run_load(f"http://127.0.0.1:{port}{path}", connections=connections,
                        duration=duration)
    finally:
        os.sched_setaffinity(0, before)


@pytest.fixture
def bench_tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tailfast-bench-") as d:
        yield Path(d)


def record(group: str, name: str, figures: dict[str, Any]) -> None:
    RESULTS.setdefault(group, {})[name] = figures


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tr = terminalreporter
    if not RESULTS:
        return
    tr.section("tailfast bench: figures from this run")
    tr.write_line(f"{len(CPUS)} CPU(s); servers on CPU {SERVER_CPUS}, generator on CPU "
                  f"{LOAD_CPUS}; {CONNECTIONS} connections, {DURATION:g} s, median of "
                  f"{ROUNDS} run(s)")
    throughput = RESULTS.get("throughput", {})
    if throughput:
        base = throughput.get("tailfast", {}).get("requests_per_sec")
        ceiling = throughput.get("nginx", {}).get("requests_per_sec")
        tr.write_line("")
        tr.write_line("| server (1 worker, 1 core) | requests/s | p99 ms | requests/CPU-s "
                      "| vs tailfast (req/s) | vs nginx (req/s) | vs tailfast (req/CPU-s) |")
        tr.write_line("|---|---:|---:|---:|---:|---:|---:|")
        base_cpu = throughput.get("tailfast", {}).get("requests_per_cpu_s")
        for name, f in sorted(throughput.items(), key=lambda kv: -kv[1]["requests_per_sec"]):
            rate = f["requests_per_sec"]
            vs_tf = f"{rate / base:.2f}" if base else "n/a"
            vs_ng = f"{rate / ceiling:.2f}" if ceiling else "n/a"
            per_cpu = f["requests_per_cpu_s"]
            vs_cpu = f"{per_cpu / base_cpu:.2f}" if base_cpu else "n/a"
            tr.write_line(f"| {name} | {rate:,.0f} | {f['p99_ms']:.2f} | {per_cpu:,.0f} "
                          f"| {vs_tf} | {vs_ng} | {vs_cpu} |")
    for group in ("scaling", "balance", "idle connections", "lifecycle", "memory", "parser"):
        rows = RESULTS.get(group)
        if not rows:
            continue
        tr.write_line("")
        tr.write_line(f"{group}:")
        for name, f in rows.items():
            tr.write_line(f"  {name}: " + ", ".join(
                f"{k} {v:,.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in f.items()))
