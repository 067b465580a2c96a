"""Issue-2 baseline: one tailfast worker vs nginx `return 200`, same run, same pinning.

    python bench/baseline_vs_nginx.py [--duration 5] [--repeat 3]

The servers are pinned to CPU 0 and wrk (-t1 -c64, keep-alive) to CPU 1. For each
run it reports requests/s, p99 latency and requests per server CPU-second
(utime+stime of the server's processes, from /proc, over the run), and prints
the medians and the tailfast/nginx ratios. Needs wrk and nginx on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
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


def start_tailfast(port: int) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "tailfast", "run", "examples.hello:app",
         "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "started" in line:
            break
    time.sleep(0.2)
    return proc, [proc.pid, *children(proc.pid)]


def run_wrk(port: int, duration: float) -> tuple[float, float]:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{duration:g}s", "--latency",
         f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def measure(port: int, pids: list[int], duration: float) -> dict[str, float]:
    cpu_before = cpu_seconds(pids)
    started = time.monotonic()
    rps, p99_ms = run_wrk(port, duration)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pids) - cpu_before
    return {"rps": rps, "p99_ms": p99_ms, "cpu_s": cpu,
            "req_per_cpu_s": rps * elapsed / cpu if cpu else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    results: dict[str, list[dict[str, float]]] = {"nginx": [], "tailfast": []}
    with tempfile.TemporaryDirectory() as tmp:
        nginx, nginx_pids = start_nginx(Path(tmp), 18181)
        tailfast, tailfast_pids = start_tailfast(18182)
        try:
            for _ in range(args.repeat):  # interleaved, so drift hits both alike
                results["nginx"].append(measure(18181, nginx_pids, args.duration))
                results["tailfast"].append(measure(18182, tailfast_pids, args.duration))
        finally:
            for proc in (nginx, tailfast):
                proc.send_signal(signal.SIGTERM if proc is tailfast else signal.SIGQUIT)
                proc.wait(30)
    medians = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
               for name, runs in results.items()}
    print("| server | req/s | p99 ms | req per CPU-s |")
    print("|---|---:|---:|---:|")
    for name, m in medians.items():
        print(f"| {name} | {m['rps']:.0f} | {m['p99_ms']:.2f} | {m['req_per_cpu_s']:.0f} |")
    t, n = medians["tailfast"], medians["nginx"]
    print(f"\ntailfast/nginx: req/s {t['rps'] / n['rps']:.2f}, "
          f"req per CPU-s {t['req_per_cpu_s'] / n['req_per_cpu_s']:.2f}, "
          f"p99 {t['p99_ms'] / n['p99_ms']:.2f} (medians of {args.repeat} runs of "
          f"{args.duration:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
