"""Respawn time: SIGKILL of a worker -> its replacement marked ready in the
scoreboard, and -> the first request answered again.

    python bench/respawn.py [--rounds 50] [--workers 1]

Starts `tailfast run` on 127.0.0.1 with a trivial handler. Each round sends
one request first (a worker that served requests is replaced at once; one
that never served counts towards the crash-loop back-off), SIGKILLs the worker,
and polls the shared-memory scoreboard (every ~50 us) until a new pid is
ready. With one worker, a request sent right after the kill waits in the
listen queue and measures kill -> answered. Prints the median and the spread.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tailfast.errors import TailfastError  # noqa: E402
from tailfast.status import read_status  # noqa: E402

APP = "def app(request):\n    return b'ok'\n"


def request(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:80]


def ready_workers(primary: int) -> dict[int, int]:
    """worker id -> pid of the ready process serving it."""
    snap = read_status(pid=primary)
    return {p["worker_id"]: p["pid"] for p in snap["processes"]
            if p["ready"] and p["state"] != "draining"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="tailfast-respawn-")
    Path(tmp, "respawnapp.py").write_text(APP)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tmp, str(ROOT)]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tailfast", "run", "respawnapp:app", "--bind", "127.0.0.1:0",
         "--workers", str(args.workers)],
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    try:
        assert proc.stderr is not None
        port = 0
        while not port:
            line = proc.stderr.readline()
            if not line:
                raise SystemExit("the server did not start")
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            port = int(match.group(1)) if match else 0
        primary = proc.pid
        deadline = time.monotonic() + 10
        while True:
            try:  # the scoreboard appears just after the listening line
                if len(ready_workers(primary)) >= args.workers:
                    break
            except TailfastError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("workers not ready")
            time.sleep(0.01)

        to_ready: list[float] = []
        to_answer: list[float] = []
        for round_ in range(args.rounds):
            for _ in range(args.workers * 4):
                request(port)  # every worker has served: no back-off
            before = ready_workers(primary)
            wid, victim = min(before.items())
            # with one worker, odd rounds send a request right after the kill: it
            # waits in the listen queue until the replacement accepts it
            answer = args.workers == 1 and round_ % 2 == 1
            killed = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            if answer:
                request(port)
                to_answer.append(time.perf_counter() - killed)
            while True:
                if ready_workers(primary).get(wid, victim) != victim:
                    break
                if time.perf_counter() - killed > 10:
                    raise SystemExit("no replacement within 10 s")
                time.sleep(0.00005)
            if not answer:
                to_ready.append(time.perf_counter() - killed)
            time.sleep(0.05)

        def summary(name: str, values: list[float]) -> None:
            ms = sorted(v * 1000 for v in values)
            print(f"{name}: median {statistics.median(ms):.2f} ms, "
                  f"min {ms[0]:.2f} ms, p90 {ms[int(len(ms) * 0.9) - 1]:.2f} ms, "
                  f"max {ms[-1]:.2f} ms ({len(ms)} rounds)")

        print(f"tailfast respawn, {args.workers} worker(s), {os.cpu_count()} CPUs")
        summary("SIGKILL -> replacement ready (scoreboard)", to_ready)
        if to_answer:
            summary("SIGKILL -> next request answered", to_answer)
        log = proc.stderr
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        rest = log.read()
        if "next attempt" in rest:
            print("warning: the back-off engaged during the run")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
