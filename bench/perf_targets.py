"""The performance targets, measured side by side in one run.

    python bench/perf_targets.py [--duration 4] [--repeat 3]

One worker of each server pinned to CPU 0, wrk (-t1 -c64) pinned to CPU 1:
nginx `return 200` (the ceiling), tailfast with a native handler, tailfast
with a WSGI app, and bjoern (when installed) with the same WSGI app; each
with keep-alive, and nginx and tailfast also with `Connection: close` (a
connection per request). Rounds are interleaved so that drift on this
shared machine hits every server alike. For each it reports the medians of
requests/s, p99 latency and requests per server CPU-second (utime+stime of
the server's processes, from /proc, over the run), then the ratios the
targets are stated in. Needs wrk and nginx on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of pids and their children that have been reaped."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def start_nginx(tmp: Path, port: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
        "events { worker_connections 1024; }\n"
        "http { access_log off; server { listen 127.0.0.1:%d;\n"
        '  location / { return 200 "Hello, World!"; } } }\n' % port
    )
    proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", str(conf)])
    time.sleep(0.5)
    return proc, [proc.pid, *children(proc.pid)]


def start_tailfast(port: int, app: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "tailfast", "run", app,
         "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "started" in line:
            break
    time.sleep(0.2)
    return proc, [proc.pid, *children(proc.pid)]


BJOERN = """
import sys
sys.path.insert(0, {root!r})
import bjoern
from examples.hello_wsgi import app
bjoern.run(app, "127.0.0.1", {port})
"""


def start_bjoern(port: int) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c",
                             BJOERN.format(root=str(ROOT), port=port)], text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, [proc.pid]


def run_wrk(port: int, duration: float, close: bool = False) -> tuple[float, float]:
    extra = ["-H", "Connection: close"] if close else []
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{duration:g}s", "--latency", *extra,
         f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def measure(port: int, pids: list[int], duration: float, close: bool) -> dict[str, float]:
    cpu_before = cpu_seconds(pids)
    started = time.monotonic()
    rps, p99_ms = run_wrk(port, duration, close)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pids) - cpu_before
    return {"rps": rps, "p99_ms": p99_ms, "cpu_s": cpu,
            "req_per_cpu_s": rps * elapsed / cpu if cpu else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    try:
        import bjoern  # noqa: F401
        have_bjoern = True
    except ImportError:
        have_bjoern = False
    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            "nginx": start_nginx(Path(tmp), 18181),
            "tailfast": start_tailfast(18182, "examples.hello:app"),
            "tailfast-wsgi": start_tailfast(18183, "examples.hello_wsgi:app"),
        }
        if have_bjoern:
            servers["bjoern"] = start_bjoern(18184)
        ports = {"nginx": 18181, "tailfast": 18182, "tailfast-wsgi": 18183, "bjoern": 18184}
        cases = [(name, False) for name in servers] + [("nginx", True), ("tailfast", True)]
        results: dict[str, list[dict[str, float]]] = {}
        try:
            for _ in range(args.repeat):  # interleaved, so drift hits all alike
                for name, close in cases:
                    label = f"{name} (close)" if close else name
                    pids = servers[name][1]
                    results.setdefault(label, []).append(
                        measure(ports[name], pids, args.duration, close))
        finally:
            for name, (proc, _) in servers.items():
                proc.send_signal(signal.SIGQUIT if name == "nginx" else
                                 signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    medians = {label: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
               for label, runs in results.items()}
    print(f"medians of {args.repeat} interleaved runs of {args.duration:g} s; server on CPU 0, "
          "wrk -t1 -c64 on CPU 1\n")
    print("| server | req/s | p99 ms | req per CPU-s |")
    print("|---|---:|---:|---:|")
    for label, m in medians.items():
        print(f"| {label} | {m['rps']:.0f} | {m['p99_ms']:.2f} | {m['req_per_cpu_s']:.0f} |")

    def ratio(a: str, b: str, key: str) -> str:
        if a not in medians or b not in medians:
            return "n/a"
        return f"{medians[a][key] / medians[b][key]:.2f}"

    print("\n| target | req/s ratio | req per CPU-s ratio |")
    print("|---|---:|---:|")
    for title, a, b in (("native vs nginx, keep-alive (>= 0.90)", "tailfast", "nginx"),
                        ("WSGI vs bjoern (>= 1.0)", "tailfast-wsgi", "bjoern"),
                        ("WSGI vs nginx (>= 0.75)", "tailfast-wsgi", "nginx"),
                        ("connection per request vs nginx (>= 0.80)", "tailfast (close)",
                         "nginx (close)")):
        print(f"| {title} | {ratio(a, b, 'rps')} | {ratio(a, b, 'req_per_cpu_s')} |")
    print(f"| p99 native vs nginx (<= 1.5) | {ratio('tailfast', 'nginx', 'p99_ms')} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
