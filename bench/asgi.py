"""Issue 14's ASGI figures: hello world per server CPU-second, and a handler awaiting 20 ms.

    python -m bench.asgi [--duration 5] [--repeat 3] [--cases hello,wait]

One worker pinned to --server-cpus (CPU 0), wrk pinned to --load-cpus (CPU 1),
medians of --repeat interleaved rounds (every server gets one run per round,
so drift on this shared machine hits all alike). Servers: tailfast (raw ASGI,
uvloop), tailfast --loop asyncio, the reverse arrangement (the C loop waits
and runs asyncio's loop one iteration per pass, TF_BENCH_DRIVE=c), granian
--interface asgi, uvicorn with uvloop and httptools. Apps: tests/apps/asgiapps.py (hello, wait20).

- hello: 64 connections; requests per server CPU-second (the server's
  processes' CPU time over the run, from a cgroup v2 to the microsecond). Targets: tailfast >= 1.6x
  granian and >= 3x uvicorn.
- wait: 128 connections, each request awaits asyncio.sleep(0.02); requests/s
  (ideal 6,400) and server CPU per request. Targets: >= 90% of 6,400 and CPU
  per request <= 0.6x granian's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Sequence

from bench.concurrency import Row, Running, Spec, Unavailable
from tailfast.bench.procstat import CpuMeter

WRK_LINE = re.compile(r"(\d+) requests in ([\d.]+)s")


def servers(case: str) -> list[Spec]:
    app = "asgiapps:hello" if case == "hello" else "asgiapps:wait20"
    tf = ["tailfast", "run", app, "--workers", "1", "--interface", "asgi"]
    return [
        Spec("tailfast (uvloop)", [*tf, "--loop", "uvloop"]),
        Spec("tailfast (asyncio)", [*tf, "--loop", "asyncio"]),
        Spec("tailfast (asyncio, C loop waits)", [*tf, "--loop", "asyncio", "--drive-c"]),
        Spec("granian --interface asgi",
             ["granian", "--interface", "asgi", "--workers", "1", "--host", "127.0.0.1",
              "--port", "{port}", "--log-level", "warning", "--no-ws", app]),
        Spec("uvicorn (uvloop, httptools)",
             ["uvicorn", "--workers", "1", "--loop", "uvloop", "--http", "httptools",
              "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
              "--no-access-log", "--lifespan", "off", app]),
    ]


def wrk(port: int, connections: int, duration: float,
        cpus: Sequence[int]) -> tuple[int, float, int]:
    """(requests, seconds, errors) of one wrk run pinned to cpus."""
    command = ["taskset", "-c", ",".join(map(str, cpus)), "wrk", "-t1", f"-c{connections}",
               f"-d{max(1, round(duration))}s", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30).stdout
    m = WRK_LINE.search(out)
    if not m:
        raise RuntimeError(f"cannot read wrk's output: {out!r}")
    errors = 0
    for line in out.splitlines():
        if "Non-2xx" in line or "Socket errors" in line:
            errors += sum(int(n) for n in re.findall(r"\d+", line.split(":", 1)[1]))
    return int(m.group(1)), float(m.group(2)), errors


def measure(server: Running, case: str, duration: float,
            load_cpus: Sequence[int]) -> dict[str, float]:
    connections = 64 if case == "hello" else 128
    wrk(server.port, connections, 1.0, load_cpus)  # warm-up
    with CpuMeter(server.pids()) as meter:
        requests, seconds, errors = wrk(server.port, connections, duration, load_cpus)
        cpu = meter.seconds()
    return {"rps": requests / seconds,
            "req_per_cpu_s": requests / cpu if cpu > 0 else float("nan"),
            "cpu_us_per_req": cpu / requests * 1e6 if requests else float("nan"),
            "errors": errors}


def run_case(case: str, rounds: int, duration: float, server_cpus: Sequence[int],
             load_cpus: Sequence[int]) -> list[Row]:
    specs = servers(case)
    rows = [Row(s.name) for s in specs]
    for _ in range(rounds):
        for spec, row in zip(specs, rows, strict=True):
            if row.missing:
                continue
            # the reverse arrangement (the C loop waits, asyncio's loop is ticked)
            reverse = "--drive-c" in spec.command
            command = [a for a in spec.command if a != "--drive-c"]
            os.environ["TF_BENCH_DRIVE"] = "c" if reverse else ""
            try:
                running = Spec(spec.name, command).start(server_cpus)
            except Unavailable as exc:
                row.missing = str(exc)
                continue
            try:
                row.runs.append(measure(running, case, duration, load_cpus))
            finally:
                running.stop()
    return rows


def report(case: str, rows: list[Row]) -> str:
    lines = [f"## {case}", "", "| server | req/s | req per CPU-s | CPU us/req | errors |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        if row.missing:
            lines.append(f"| {row.name} | n/a: {row.missing} | | | |")
            continue
        errors = sum(r["errors"] for r in row.runs)
        lines.append(f"| {row.name} | {row.median('rps'):,.0f} | "
                     f"{row.median('req_per_cpu_s'):,.0f} | "
                     f"{row.median('cpu_us_per_req'):.1f} | {errors:.0f} |")
    by = {r.name: r for r in rows if r.runs}
    tf, granian, uvicorn = (by.get("tailfast (uvloop)"), by.get("granian --interface asgi"),
                            by.get("uvicorn (uvloop, httptools)"))
    lines.append("")
    if tf and granian and uvicorn and case == "hello":
        per_cpu = tf.median("req_per_cpu_s")
        lines.append(f"tailfast / granian: {per_cpu / granian.median('req_per_cpu_s'):.2f}x"
                     f" (target >= 1.6); tailfast / uvicorn: "
                     f"{per_cpu / uvicorn.median('req_per_cpu_s'):.2f}x (target >= 3)")
    if tf and granian and case == "wait":
        cpu_ratio = tf.median("cpu_us_per_req") / granian.median("cpu_us_per_req")
        lines.append(f"tailfast: {tf.median('rps') / 6400:.0%} of 6,400 req/s (target >= 90%);"
                     f" CPU per request {cpu_ratio:.2f}x granian's (target <= 0.6)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default="hello,wait")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    args = parser.parse_args(argv)
    server_cpus = [int(c) for c in args.server_cpus.split(",")]
    load_cpus = [int(c) for c in args.load_cpus.split(",")]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"server CPU from: {CpuMeter.expected_source()}")
    for case in args.cases.split(","):
        rows = run_case(case, args.repeat, args.duration, server_cpus, load_cpus)
        print(report(case, rows), flush=True)
        print()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
