"""Instructions per request of one worker, counted by callgrind (immune to machine noise).

    python bench/instructions.py [examples.hello:app ...] [--requests 2000]

For each app, runs `tailfast run APP --workers 1` under valgrind's callgrind
twice, sends N and 2N keep-alive requests on one connection, stops the
server, and reports (Ir(2N) - Ir(N)) / N for the worker process: start-up
and shutdown cancel out, what is left is the cost of one request in the
worker (C loop, parser, Python handler, response), in instructions.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
def request_bytes(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: instructions\r\n\r\n".encode()


def send_requests(port: int, count: int, path: str = "/") -> None:
    """count requests, one at a time, on one keep-alive connection."""
    request = request_bytes(path)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        buffer = b""
        for _ in range(count):
            s.sendall(request)
            while True:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end >= 0:
                    match = re.search(rb"Content-Length: (\d+)", buffer[:head_end])
                    assert match, buffer[:head_end]
                    end = head_end + 4 + int(match.group(1))
                    if len(buffer) >= end:
                        buffer = buffer[end:]
                        break
                chunk = s.recv(65536)
                assert chunk, "server closed the connection"
                buffer += chunk


def worker_instructions(app: str, count: int, out_dir: str, path: str = "/",
                        extra: tuple[str, ...] = ()) -> int:
    prefix = os.path.join(out_dir, f"run{count}")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--trace-children=yes",
         f"--callgrind-out-file={prefix}.%p", sys.executable, "-m", "tailfast", "run", app,
         "--workers", "1", "--bind", "127.0.0.1:0", *extra],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    port = worker_pid = 0
    for line in proc.stderr:
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if match:
            port = int(match.group(1))
        match = re.search(r"worker 1 \(pid (\d+)\) ready", line)
        if match:
            worker_pid = int(match.group(1))
            break
    assert port and worker_pid, "the server did not start"
    send_requests(port, 10, path)  # warm-up: first-call costs are the same in both runs
    send_requests(port, count, path)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    for _ in range(50):
        files = glob.glob(f"{prefix}.{worker_pid}")
        if files:
            break
        time.sleep(0.1)
    text = Path(f"{prefix}.{worker_pid}").read_text(errors="replace")
    summary = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)",
                                                                       text, re.M)
    assert summary, "no totals in the callgrind output"
    return int(summary.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("apps", nargs="*", default=["examples.hello:app"])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--bare-c", action="store_true",
                        help="also count a response written by C alone (--health-path)")
    args = parser.parse_args()
    n = args.requests
    runs = [(app, "/", ()) for app in args.apps]
    if args.bare_c:
        runs.append((args.apps[0], "/healthz", ("--health-path", "/healthz")))
    print("| app | path | instructions per request |")
    print("|---|---|---:|")
    for app, path, extra in runs:
        with tempfile.TemporaryDirectory() as out_dir:
            small = worker_instructions(app, n, out_dir, path, extra)
            large = worker_instructions(app, 2 * n, out_dir, path, extra)
        label = f"{path} (answered in C)" if extra else path
        print(f"| `{app}` | {label} | {(large - small) / n:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
