"""The measurements behind `python -m bench.report`: figures of every run, per server or case."""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from bench.concurrency import Row, Running, Unavailable, start_peer, start_tailfast
from bench.peers import Peer, free_port, nginx_command
from tailfast.bench.load import run_load
from tailfast.bench.procstat import cpu_seconds, process_tree, pss_kib
from tailfast.bench.server import BenchServer

# The generator's connections for the throughput table (keep-alive, one request
# in flight each): as in bench/conftest.py and bench/perf_targets.py.
CONNECTIONS = 64


# ---------------------------------------------------------------- throughput


@dataclass
class Server:
    """A server of the throughput table: how to start it, and whether its
    connections are closed after each request (`Connection: close` load)."""

    name: str
    start: Callable[[Sequence[int], Path], Running]
    close: bool = False


def _tailfast(app: str, *extra: str) -> Callable[[Sequence[int], Path], Running]:
    return lambda cpus, tmp: start_tailfast([app, "--workers", "1", *extra], cpus)


def _peer(*command: str) -> Callable[[Sequence[int], Path], Running]:
    return lambda cpus, tmp: start_peer(list(command), cpus)


def _bjoern(cpus: Sequence[int], tmp: Path) -> Running:
    if find_spec("bjoern") is None:
        raise Unavailable("bjoern is not installed (apt-get install libev-dev; pip install bjoern)")
    port = free_port()
    code = f"import bjoern; from bench.apps import wsgi; bjoern.run(wsgi, '127.0.0.1', {port})"
    peer = Peer([sys.executable, "-c", code], port, cpus)
    return Running(port, lambda: process_tree(peer.proc.pid), peer.stop)


def _nginx(cpus: Sequence[int], tmp: Path) -> Running:
    port = free_port()
    command = nginx_command(tmp / f"nginx-{port}", port)
    if command is None:
        raise Unavailable("nginx is not installed (apt-get install nginx-light)")
    peer = Peer(command, port, cpus)
    return Running(port, lambda: process_tree(peer.proc.pid), peer.stop)


SERVERS = [
    Server("tailfast", _tailfast("bench.apps:native")),
    Server("tailfast-wsgi", _tailfast("bench.apps:wsgi", "--interface", "wsgi")),
    Server("bjoern", _bjoern),
    Server("nginx", _nginx),
    Server("uvicorn-httptools", _peer("uvicorn", "bench.apps:asgi", "--http", "httptools",
                                      "--port", "{port}", "--log-level", "warning",
                                      "--no-access-log")),
    # gunicorn's default sync worker closes every connection, as deployed by default
    Server("gunicorn", _peer("gunicorn", "-w", "1", "-b", "127.0.0.1:{port}",
                             "--log-level", "warning", "bench.apps:wsgi")),
    Server("tailfast (close)", _tailfast("bench.apps:native"), close=True),
    Server("nginx (close)", _nginx, close=True),
]


def load_run(server: Running, duration: float, close: bool = False,
             connections: int = CONNECTIONS) -> dict[str, float]:
    """One run of the C generator (on this thread's CPUs) with the server's CPU over it."""
    pids = server.pids()
    before = sum(map(cpu_seconds, pids))
    result = run_load(f"http://127.0.0.1:{server.port}/", connections=connections,
                      duration=duration, close=close)
    cpu = sum(map(cpu_seconds, pids)) - before
    lat = result["latency_ns"]
    return {"rps": result["requests_per_sec"], "p50_ms": lat["p50"] / 1e6,
            "p99_ms": lat["p99"] / 1e6, "errors": result["errors_total"],
            "req_per_cpu_s": result["requests"] / cpu if cpu > 0 else float("nan")}


def throughput(server_cpus: Sequence[int], duration: float, repeat: int,
               warmup: float) -> list[Row]:
    """Every server of SERVERS, one worker on server_cpus; rounds interleaved so
    that drift on a shared machine hits all alike."""
    rows = [Row(s.name) for s in SERVERS]
    started: list[tuple[Row, Server, Running]] = []
    with tempfile.TemporaryDirectory(prefix="tailfast-report-") as tmp:
        try:
            for row, spec in zip(rows, SERVERS, strict=True):
                try:
                    running = spec.start(server_cpus, Path(tmp))
                except Unavailable as exc:
                    row.missing = str(exc)
                    continue
                started.append((row, spec, running))
                if warmup > 0:
                    load_run(running, warmup, spec.close)
            for _ in range(repeat):
                for row, spec, running in started:
                    row.runs.append(load_run(running, duration, spec.close))
        finally:
            for _, _, running in started:
                running.stop()
    return rows


# ----------------------------------------------------------------- lifecycle


def _first_response(port: int, timeout: float = 10.0) -> None:
    from tailfast.testing import http_request

    deadline = time.monotonic() + timeout
    while True:
        try:
            if http_request(port, timeout=1)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("no response")
        time.sleep(0.001)


def startup(workers: int, rounds: int) -> list[float]:
    """Seconds from `tailfast run` to the first 200, one fresh server per round."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        with BenchServer("bench.apps:native", workers) as server:
            try:
                server.wait_ready()
                _first_response(server.port)
                times.append(time.perf_counter() - t0)
            finally:
                server.stop()
    return times


def respawn(rounds: int) -> list[float]:
    """Seconds from SIGKILL of a worker that has served to its replacement ready
    in the scoreboard (2 workers: the other one serves meanwhile)."""
    from bench.respawn import ready_workers

    times = []
    with BenchServer("bench.apps:native", 2).wait_ready() as server:
        try:
            for _ in range(rounds):
                for _ in range(8):
                    _first_response(server.port)  # both have served: no back-off
                wid, victim = min(ready_workers(server.pid).items())
                killed = time.perf_counter()
                os.kill(victim, signal.SIGKILL)
                while ready_workers(server.pid).get(wid, victim) == victim:
                    if time.perf_counter() - killed > 10:
                        raise RuntimeError("no replacement within 10 s")
                    time.sleep(0.00005)
                times.append(time.perf_counter() - killed)
                time.sleep(0.05)
        finally:
            server.stop()
    return times


def memory(counts: Sequence[int]) -> dict[int, dict[str, int]]:
    """PSS in KiB of the primary and the mean worker at each worker count, after
    some requests."""
    out = {}
    for n in counts:
        with BenchServer("bench.apps:native", n).wait_ready() as server:
            try:
                run_load(f"http://127.0.0.1:{server.port}/", connections=8, duration=0.5)
                pss = {p: pss_kib(p) or 0 for p in server.pids()}
            finally:
                server.stop()
        workers = [kib for p, kib in pss.items() if p != server.pid]
        out[n] = {"primary": pss[server.pid], "worker": round(statistics.mean(workers)),
                  "total": sum(pss.values())}
    return out


# -------------------------------------------------------- parser, instructions


def parser(repeat: int) -> dict[str, list[float]]:
    """ns per request head: tailfast's C loop, one per Python call, httptools."""
    import timeit

    from tailfast._bench import parse_request_loop

    from bench.parser_request import REQUEST

    loop = 20_000
    figures: dict[str, list[float]] = {"tailfast, C loop (20,000 per call)": [],
                                       "tailfast, 1 per Python call": []}
    calls = 200_000
    for _ in range(repeat):
        figures["tailfast, C loop (20,000 per call)"].append(
            parse_request_loop(REQUEST, loop)[0] / loop)  # ns for the loop
        t = timeit.timeit(lambda: parse_request_loop(REQUEST, 1), number=calls)
        figures["tailfast, 1 per Python call"].append(t / calls * 1e9)
    if find_spec("httptools") is not None:
        import httptools

        class _Fields:
            def on_url(self, url: bytes) -> None:
                self.url = url

            def on_header(self, name: bytes, value: bytes) -> None:
                pass

        for name, proto in (("httptools feed_data, no callbacks", object()),
                            ("httptools feed_data, on_url + on_header", _Fields())):
            p = httptools.HttpRequestParser(proto)  # one parser, request after request
            figures[name] = [timeit.timeit(lambda p=p: p.feed_data(REQUEST), number=calls)
                             / calls * 1e9 for _ in range(repeat)]
    return figures


def instructions(requests: int) -> list[tuple[str, float]] | str:
    """User-space instructions per request of the worker (callgrind), or why not."""
    import shutil

    if shutil.which("valgrind") is None:
        return "valgrind is not installed (apt-get install valgrind)"
    from bench.instructions import worker_instructions

    cases = [("written by C alone (`--health-path`)", "examples.hello:app", "/healthz",
              ("--health-path", "/healthz")),
             ("native hello world (`examples.hello:app`)", "examples.hello:app", "/", ()),
             ("WSGI hello world (`examples.hello_wsgi:app`)", "examples.hello_wsgi:app", "/",
              ())]
    rows: list[tuple[str, float]] = []
    for label, app, path, extra in cases:
        with tempfile.TemporaryDirectory() as out_dir:
            small = worker_instructions(app, requests, out_dir, path, extra)
            large = worker_instructions(app, 2 * requests, out_dir, path, extra)
        rows.append((label, (large - small) / requests))
    return rows


def run_parts(parts: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Runs each named measurement; one that fails is reported as the error."""
    out: dict[str, Any] = {}
    for name, fn in parts.items():
        print(f"bench.report: {name}", file=sys.stderr, flush=True)
        try:
            out[name] = fn()
        except (Unavailable, RuntimeError, AssertionError, OSError) as exc:
            out[name] = f"not measured: {exc}"
    return out
