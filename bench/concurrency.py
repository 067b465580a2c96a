"""Issue 13's benchmarks: handlers that wait, tail latency under mixed load, the cost of threads.

    python -m bench.concurrency [--duration 4] [--repeat 3] [--cases wait,mixed,hello]

Three cases, each a table of medians over interleaved rounds (every server of
a case gets one run per round, so drift on this shared machine hits all alike;
each runs alone: started, warmed up, measured, stopped)
and the ratios issue 13's targets are stated in:

- wait: 1 worker, a handler that waits 20 ms (time.sleep), 32 keep-alive
  connections. tailfast `--threads 16` (native and WSGI) against gunicorn
  `-k gthread --threads 16` and granian `--interface wsgi --blocking-threads 16`:
  requests/s (ideal 800) and server CPU per request (the server's processes'
  CPU time over the run, from a cgroup v2 to the microsecond; see CpuMeter).
- mixed: 2 workers; 8 connections keep requesting /wait (20 ms) while 32
  request / (answered at once); the fast requests' requests/s, p50 and p99 for
  tailfast `--threads 8`, gunicorn gthread `--threads 8`, granian
  `--blocking-threads 8`.
- hello: hello world on 1 worker, 64 connections, tailfast `--threads 4` against
  `--threads 1`: requests per server CPU-second.

Servers run on --server-cpus, the load generator (tailfast's C generator, one
thread per load stream) on --load-cpus; on 2 CPUs that is CPU 0 and CPU 1.
tailfast without `--threads` ("inline") runs too, as the baseline. A tailfast
that rejects `--threads`, or a peer that is not installed, is reported as n/a.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any

from bench.apps import WAIT_PATH, WAIT_SECONDS
from bench.peers import Peer, free_port
from tailfast.bench.load import run_load
from tailfast.bench.procstat import CpuMeter, process_tree
from tailfast.bench.server import BenchServer
from tailfast.testing import http_request

# Seconds the slow stream runs before (and after) the measured fast stream.
LEAD = 0.25
# The generator's per-request timeout: an inline tailfast keeps requests waiting
# for a long time, and a wait is a latency to report, not an error.
LOAD_TIMEOUT = 30.0


class Unavailable(Exception):
    """A server that cannot run here: not installed, rejecting an option, failing
    to start (its row says why; the other servers of the case still run)."""


@dataclass
class Running:
    """A started server: its port, how to list its processes now, how to stop it."""

    port: int
    pids: Callable[[], list[int]]
    stop: Callable[[], None]


@dataclass
class Spec:
    """One server of a case: its row name and its command line, `tailfast run ...`
    or `python -m PEER ...`, where {port} stands for a free port."""

    name: str
    command: list[str]

    def shell(self) -> str:
        """The command line as one would type it."""
        prefix = "" if self.command[0] == "tailfast" else "python -m "
        return prefix + " ".join(self.command)

    def start(self, cpus: Sequence[int]) -> Running:
        if self.command[0] == "tailfast":
            return start_tailfast(self.command[2:], cpus)
        return start_peer(self.command, cpus)


@dataclass
class Row:
    """One row of a table: a server's figures over the runs, or why it has none.
    A run without a figure (NaN: none measured) is left out of its median."""

    name: str
    runs: list[dict[str, float]] = field(default_factory=list)
    missing: str = ""

    def _values(self, key: str) -> list[float]:
        return [r[key] for r in self.runs if r.get(key) == r.get(key)]

    def median(self, key: str) -> float:
        values = self._values(key)
        return statistics.median(values) if values else float("nan")

    def spread(self, key: str) -> tuple[float, float]:
        values = self._values(key)
        return (min(values), max(values)) if values else (float("nan"), float("nan"))


# ------------------------------------------------------------------ servers


def start_tailfast(args: list[str], cpus: Sequence[int]) -> Running:
    """`tailfast run APP --workers N ...`; Unavailable if it rejects --threads."""
    app, _, workers, *extra = args
    server = BenchServer(app, int(workers), cpus, extra=extra)
    try:
        server.wait_ready()
    except AssertionError:
        server.stop()
        if "--threads" in extra and "--threads" in server.output:
            raise Unavailable("tailfast rejects --threads") from None
        last = (server.output.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"did not start: {last}") from None
    return Running(server.port, server.pids, server.stop)


def start_peer(command: list[str], cpus: Sequence[int]) -> Running:
    """`python -m PEER ...`, once it answers GET / with 200."""
    if find_spec(command[0]) is None:
        raise Unavailable(f"{command[0]} is not installed (pip install -e '.[bench]')")
    port = free_port()
    try:
        server = Peer([sys.executable, "-m", *(a.format(port=port) for a in command)], port,
                      cpus)
    except RuntimeError as exc:  # it exited, or never listened
        raise Unavailable(f"did not start: {exc}") from None
    deadline = time.monotonic() + 20
    while True:  # listening is not serving: granian's workers start later
        try:
            if http_request(port, timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise Unavailable(f"{command[0]} does not answer on port {port}")
        time.sleep(0.05)
    return Running(port, lambda: process_tree(server.proc.pid), server.stop)


def servers(case: str, threads: int, workers: int) -> list[Spec]:
    """The servers a case compares; apps from bench/apps.py."""
    native, wsgi = {"wait": ("native_wait", "wsgi_wait"), "mixed": ("native_mixed", "wsgi_mixed"),
                    "hello": ("native", "wsgi")}[case]
    native, wsgi = f"bench.apps:{native}", f"bench.apps:{wsgi}"
    tf = ["tailfast", "run", native, "--workers", str(workers)]
    tf_threads = [*tf, "--threads", str(threads)]
    if case == "hello":
        return [Spec("tailfast --threads 1", [*tf, "--threads", "1"]),
                Spec(f"tailfast --threads {threads}", tf_threads)]
    return [
        Spec("tailfast inline", tf),
        Spec(f"tailfast --threads {threads}", tf_threads),
        Spec(f"tailfast-wsgi --threads {threads}",
             ["tailfast", "run", wsgi, "--workers", str(workers), "--interface", "wsgi",
              "--threads", str(threads)]),
        Spec(f"gunicorn gthread --threads {threads}",
             ["gunicorn", "-w", str(workers), "-k", "gthread", "--threads", str(threads),
              "-b", "127.0.0.1:{port}", "--log-level", "warning", wsgi]),
        Spec(f"granian --blocking-threads {threads}",
             ["granian", "--interface", "wsgi", "--workers", str(workers),
              "--blocking-threads", str(threads), "--host", "127.0.0.1", "--port", "{port}",
              "--log-level", "warning", wsgi]),
    ]


# -------------------------------------------------------------------- load


def load(port: int, path: str, connections: int, duration: float) -> dict[str, Any]:
    """One stream of the C generator, on this thread's CPUs (the load CPUs)."""
    return run_load(f"http://127.0.0.1:{port}{path}", connections=connections,
                    duration=duration, timeout=LOAD_TIMEOUT)


def figures(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    lat = result["latency_ns"]
    return {f"{prefix}rps": result["requests_per_sec"], f"{prefix}p50_ms": lat["p50"] / 1e6,
            f"{prefix}p99_ms": lat["p99"] / 1e6, f"{prefix}errors": result["errors_total"]}


def measure(server: Running, case: str, duration: float, connections: int) -> dict[str, float]:
    """One run: the load of the case, with the server's CPU seconds over it."""
    slow: dict[str, Any] = {}
    thread = None
    with CpuMeter(server.pids()) as meter:
        if case == "mixed":  # the slow stream runs all through the fast one
            thread = threading.Thread(target=lambda: slow.update(
                load(server.port, WAIT_PATH, 8, duration + 2 * LEAD)))
            thread.start()
            time.sleep(LEAD)
        fast = load(server.port, "/", connections, duration)
        if thread is not None:
            thread.join()
    cpu = meter.seconds()  # the figure at close()
    run = figures(fast)
    # No CPU counted (an inline server that waits, read in ticks): no figure.
    per_req = cpu > 0 and fast["requests"] > 0
    run["cpu_us_per_req"] = cpu / fast["requests"] * 1e6 if per_req else float("nan")
    run["req_per_cpu_s"] = fast["requests"] / cpu if per_req else float("nan")
    if slow:
        run.update(figures(slow, "slow_"))
    return run


def run_case(case: str, specs: list[Spec], args: argparse.Namespace,
             connections: int) -> list[Row]:
    """Interleaved rounds: in each, every server of the case in turn is started,
    warmed up, measured and stopped, so that no other server (an inline one
    still working off its queue, a peer's timers) shares its CPU meanwhile."""
    rows = [Row(spec.name) for spec in specs]
    for _ in range(args.repeat):
        for row, spec in zip(rows, specs, strict=True):
            if row.missing:
                continue
            try:
                server = spec.start(args.server_cpus)
            except Unavailable as exc:
                row.missing = str(exc)
                continue
            try:
                if args.warmup > 0:
                    measure(server, case, args.warmup, connections)
                row.runs.append(measure(server, case, args.duration, connections))
            finally:
                server.stop()
    return rows


# ----------------------------------------------------------------- reports


def cell(value: float, fmt: str) -> str:
    return "n/a" if value != value else format(value, fmt)  # NaN: no figure


def ratio(rows: list[Row], name: str, base: str, key: str) -> str:
    """median(name) / median(base) of key, by the rows' name prefixes."""
    def find(prefix: str) -> Row | None:
        exact = [r for r in rows if r.name == prefix]
        return next((r for r in exact or rows if r.name.startswith(prefix) and r.runs), None)
    a, b = find(name), find(base)
    if a is None or b is None or not b.median(key):
        return "n/a"
    return cell(a.median(key) / b.median(key), ".2f")


def table(rows: list[Row], columns: list[tuple[str, str, str]]) -> list[str]:
    """A markdown table: one line per row, columns (title, key, format) of medians,
    then the lowest and highest run of the first column (the spread), then errors."""
    title, key, fmt = columns[0]
    titles = " | ".join(t for t, _, _ in columns)
    lines = [f"| server | {titles} | {title} min-max | errors |",
             "|---|" + "---:|" * (len(columns) + 2)]
    for row in rows:
        if not row.runs:
            lines.append(f"| {row.name} | " + " | ".join("n/a" for _ in range(len(columns) + 1))
                         + f" | {row.missing or 'n/a'} |")
            continue
        errors = sum(r["errors"] + r.get("slow_errors", 0) for r in row.runs)
        low, high = min(r[key] for r in row.runs), max(r[key] for r in row.runs)
        lines.append(f"| {row.name} | " + " | ".join(cell(row.median(k), f) for _, k, f in columns)
                     + f" | {cell(low, fmt)}-{cell(high, fmt)} | {errors:.0f} |")
    return lines


def vs_granian(rows: list[Row], columns: list[tuple[str, str]]) -> list[str]:
    """A table of each server's ratio to granian, one column per (label, key)."""
    lines = ["", "| vs granian | " + " | ".join(label for label, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for row in (r for r in rows if not r.name.startswith("granian")):
        cells = " | ".join(ratio(rows, row.name, "granian", key) for _, key in columns)
        lines.append(f"| {row.name} | {cells} |")
    return lines


def report_wait(rows: list[Row], threads: int) -> list[str]:
    ideal = threads / WAIT_SECONDS
    for row in rows:
        for run in row.runs:
            run["of_ideal"] = run["rps"] / ideal
    lines = table(rows, [("req/s", "rps", ".0f"), (f"of ideal {ideal:.0f}", "of_ideal", ".2f"),
                         ("server CPU µs/req", "cpu_us_per_req", ".0f"),
                         ("p99 ms", "p99_ms", ".1f")])
    lines += vs_granian(rows, [("req/s", "rps"), ("CPU per request", "cpu_us_per_req")])
    lines.append(f"\ntargets: tailfast --threads {threads} at least 0.90 of ideal, "
                 "CPU per request at most 0.6x granian's")
    return lines


def report_mixed(rows: list[Row], threads: int) -> list[str]:
    lines = table(rows, [("fast req/s", "rps", ".0f"), ("fast p50 ms", "p50_ms", ".2f"),
                         ("fast p99 ms", "p99_ms", ".2f"), ("slow req/s", "slow_rps", ".0f")])
    lines += vs_granian(rows, [("fast req/s", "rps"), ("fast p99", "p99_ms")])
    lines.append(f"\ntargets: tailfast --threads {threads} fast req/s at least 1.0x granian's, "
                 "fast p99 at most 1.0x")
    return lines


def report_hello(rows: list[Row], threads: int) -> list[str]:
    lines = table(rows, [("req/s", "rps", ".0f"), ("req per CPU-s", "req_per_cpu_s", ".0f"),
                         ("p99 ms", "p99_ms", ".2f")])
    many, one = f"tailfast --threads {threads}", "tailfast --threads 1"
    lines.append(f"\n--threads {threads} vs --threads 1, req per CPU-s: "
                 f"{ratio(rows, many, one, 'req_per_cpu_s')} (target at least 0.8); "
                 f"req/s: {ratio(rows, many, one, 'rps')}")
    return lines


# --------------------------------------------------------------------- main

CASES = {
    # case: (title, workers, threads, connections of the measured stream, report)
    "wait": ("a handler waiting 20 ms, 1 worker, 32 keep-alive connections", 1, 16, 32,
             report_wait),
    "mixed": ("mixed load, 2 workers: 8 connections on /wait (20 ms) while 32 request / (fast)",
              2, 8, 32, report_mixed),
    "hello": ("hello world, 1 worker, 64 keep-alive connections", 1, 4, 64, report_hello),
}


def cpu_list(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    cpus = sorted(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of load on each server before the rounds (0: none)")
    parser.add_argument("--cases", default="wait,mixed,hello",
                        help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument("--only", default="",
                        help="comma-separated: only the servers whose row name starts with one "
                        "of these (e.g. tailfast)")
    parser.add_argument("--server-cpus", type=cpu_list, default=cpus[:-1] or cpus,
                        help="CPUs for the servers (default: all but the last)")
    parser.add_argument("--load-cpus", type=cpu_list, default=cpus[-1:],
                        help="CPUs for the load generator (default: the last)")
    args = parser.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Threads started from here (the generator's) inherit the load CPUs; the
    # servers are pinned to theirs when they start.
    os.sched_setaffinity(0, set(args.load_cpus))
    load_before = os.getloadavg()
    out = [f"servers on CPU {','.join(map(str, args.server_cpus))}, load generator on CPU "
           f"{','.join(map(str, args.load_cpus))}; medians of {args.repeat} interleaved "
           f"round(s) of {args.duration:g} s, {args.warmup:g} s warm-up per server; "
           f"server CPU from {CpuMeter.expected_source()}"]
    for case in args.cases.split(","):
        title, workers, threads, connections, report = CASES[case]
        specs = [s for s in servers(case, threads, workers)
                 if s.name.startswith(tuple(args.only.split(",")))]
        rows = run_case(case, specs, args, connections)
        out += ["", f"## {case}: {title}", "", *report(rows, threads), "", "commands:"]
        out += [f"- {s.name}: `{s.shell()}`" for s in specs]
    load_after = os.getloadavg()
    out.append(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
               f"{os.cpu_count()} CPUs")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
