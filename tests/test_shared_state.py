"""Workers share state through a real Redis and a real SQLite database (examples/counter_*)."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

WORKERS = 4
CLIENTS = 4
INCREMENTS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, without persistence."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    pytest.importorskip("redis")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("redis-server did not start")
            time.sleep(0.05)  # polling redis
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def hammer(port: int) -> tuple[list[int], Counter[int]]:
    """CLIENTS keep-alive clients, INCREMENTS requests each; returns values and workers seen."""
    values: list[int] = []
    workers: Counter[int] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(CLIENTS)

    def client() -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.connect()
            barrier.wait(10)  # all connections open before any request
            mine = []
            seen: Counter[int] = Counter()
            for _ in range(INCREMENTS):
                conn.request("POST", "/")
                resp = conn.getresponse()
                body = json.loads(resp.read())
                assert resp.status == 200, body
                mine.append(body["value"])
                seen[body["worker"]] += 1
            conn.close()
            with lock:
                values.extend(mine)
                workers.update(seen)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return values, workers


def check_counter(values: list[int], workers: Counter[int]) -> None:
    total = CLIENTS * INCREMENTS
    assert len(values) == total
    # every increment happened exactly once: the values are 1..total, each once
    assert sorted(values) == list(range(1, total + 1))
    assert set(workers) == set(range(1, WORKERS + 1)), workers


def test_redis_counter_across_workers(run_server, redis_url):
    server = run_server("examples.counter_redis:app", "--bind", ":0", "--workers", str(WORKERS),
                        "--on-worker-start", "examples.counter_redis:connect",
                        env={"REDIS_URL": redis_url})
    check_counter(*hammer(server.port))
    assert "warning: fd" not in server.output


def test_sqlite_counter_across_workers(run_server, tmp_path):
    server = run_server("examples.counter_sqlite:app", "--bind", ":0", "--workers", str(WORKERS),
                        "--on-worker-start", "examples.counter_sqlite:connect",
                        env={"COUNTER_DB": str(tmp_path / "counter.sqlite3")})
    check_counter(*hammer(server.port))


def test_connection_opened_before_fork_is_reported(run_server, redis_url, tmp_path):
    (tmp_path / "leaky.py").write_text(
        "import os, redis\n"
        "client = redis.Redis.from_url(os.environ['REDIS_URL'])\n"
        "client.ping()  # connected in the primary, at import time: inherited by workers\n"
        "def app(request):\n"
        "    return str(client.incr('leaky'))\n"
    )
    server = run_server("leaky:app", "--bind", ":0", "--workers", "2", cwd=tmp_path,
                        env={"REDIS_URL": redis_url})
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    match = server.wait_for(
        rf"tailfast: warning: fd (\d+) \(a TCP connection to 127\.0\.0\.1:{port}\) was opened "
        r"before fork and is shared by every worker"
    )
    assert int(match[0].group(1)) > 2
