"""Idle connections against the shared socket (issue 18): connect times and later requests.

Opens N connections one after another that send nothing (preconnects, a load
balancer's pool), timing each connect, then sends one request on each of 20
new connections and counts those unanswered after 3 s. A connect over 0.5 s
means the listen queue was full while workers could have accepted.

    python bench/idle_connections.py --connections 3000 --workers 2
    python bench/idle_connections.py --connections 3000 --workers 2 --balance reuseport
    python bench/idle_connections.py --connections 3000 --workers 1
    python bench/idle_connections.py --connections 10000 --workers 2 --nofile 1024

--nofile S runs the server with a soft descriptor limit of S (hard: this
process's), as from a shell whose `ulimit -n` is S.
"""

from __future__ import annotations

import argparse
import resource
import selectors
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tailfast.testing import Server  # noqa: E402 - after the path above

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


@dataclass
class Result:
    opened_in: float  # seconds for all idle connects
    slow_connects: int  # connects over 0.5 s
    worst_connect: float
    failed_connects: int
    unanswered: int  # of the later requests, after 3 s
    later_worst: float  # slowest answered later request, seconds


def raise_own_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def open_idle(port: int, count: int) -> tuple[list[socket.socket], list[float], int]:
    """count connections one after another; their connect times."""
    socks, times, failed = [], [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        t0 = time.perf_counter()
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            failed += 1
            s.close()
            continue
        times.append(time.perf_counter() - t0)
        socks.append(s)
    return socks, times, failed


def later_requests(port: int, count: int = 20, wait: float = 3.0) -> tuple[int, float]:
    """count requests on new connections at once: (unanswered after wait, slowest answered)."""
    t0 = time.perf_counter()
    sel = selectors.DefaultSelector()
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_WRITE)
    answered: list[float] = []
    deadline = t0 + wait
    while sel.get_map() and time.perf_counter() < deadline:
        for key, events in sel.select(max(0.0, deadline - time.perf_counter())):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if events & selectors.EVENT_WRITE:
                s.sendall(REQUEST)  # a tiny request fits the empty send buffer
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1.1 200"):
                answered.append(time.perf_counter() - t0)
            sel.unregister(s)
            s.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    sel.close()
    return count - len(answered), max(answered, default=0.0)


def measure(connections: int, workers: int, balance: str, nofile: int | None) -> Result:
    raise_own_nofile(connections + 200)
    prefix: list[str] = []
    if nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        prefix = ["prlimit", f"--nofile={nofile}:{hard}"]
    args = ["testapp:app", "--bind", "127.0.0.1:0", "--workers", str(workers),
            "--balance", balance, "--keepalive-timeout", "60"]
    with Server(args, prefix=prefix, stdout=False) as server:
        server.wait_listening()
        t0 = time.perf_counter()
        socks, times, failed = open_idle(server.port, connections)
        opened_in = time.perf_counter() - t0
        slow = [(i, round(t, 3)) for i, t in enumerate(times) if t > 0.5]
        if slow:
            print(f"  slow connects (index, seconds): {slow[:10]}")
        snapshot = server.scoreboard() or {"processes": []}
        unanswered, later_worst = later_requests(server.port)
        print("  open per worker after the idle connects: "
              f"{[p['open'] for p in snapshot['processes'] if p['ready']]}; pauses: "
              f"{[p.get('accept_pauses') for p in snapshot['processes'] if p['ready']]}")
        for s in socks:
            s.close()
        emfile = [line for line in server.lines if "Too many open files" in line]
        if emfile:
            print(f"  server logged EMFILE {len(emfile)} times: {emfile[0]}")
    return Result(opened_in, sum(t > 0.5 for t in times), max(times, default=0.0), failed,
                  unanswered, later_worst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--balance", default="shared", choices=("shared", "reuseport"))
    parser.add_argument("--nofile", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    opts = parser.parse_args()
    print(f"{opts.connections} idle connections, {opts.workers} workers, "
          f"--balance {opts.balance}" + (f", server soft nofile {opts.nofile}" if opts.nofile
                                         else ""))
    print("| opened in s | connects > 0.5 s | slowest connect s | failed connects "
          "| of 20 later requests unanswered after 3 s | slowest later s |")
    for _ in range(opts.rounds):
        r = measure(opts.connections, opts.workers, opts.balance, opts.nofile)
        print(f"| {r.opened_in:.2f} | {r.slow_connects} | {r.worst_connect:.3f} "
              f"| {r.failed_connects} | {r.unanswered} | {r.later_worst:.3f} |")


if __name__ == "__main__":
    main()
