"""A real nginx (the upstream block of docs/deployment.md) in front of two tailfast instances."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server, http_request, wait_until
from docsnippets import snippet

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs nginx-light)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf(tmp: Path, port: int, upstreams: list[int]) -> str:
    block = snippet("nginx")
    for placeholder, real in zip(("127.0.0.1:8001", "127.0.0.1:8002"), upstreams, strict=True):
        assert placeholder in block
        block = block.replace(placeholder, f"127.0.0.1:{real}")
    block, n = re.subn(r"listen 80;", f"listen 127.0.0.1:{port};", block)
    assert n == 1
    temp = "\n".join(f"    {kind}_temp_path {tmp / kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
daemon off;
master_process off;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
{temp}
{block}
}}
"""


@pytest.fixture
def proxied(run_server, tmp_path) -> Iterator[tuple[int, list[Server]]]:
    """Two tailfast instances (INSTANCE=a, b) behind nginx; yields nginx's port and them."""
    servers = [
        run_server("deployapp:app", "--bind", ":0", "--workers", "2", env={"INSTANCE": name})
        for name in ("a", "b")
    ]
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, port, [s.port for s in servers]))
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf),
                              "-e", str(tmp_path / "error.log")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if nginx.poll() is not None or time.monotonic() > deadline:
                    error_log = tmp_path / "error.log"
                    log = error_log.read_text() if error_log.exists() else ""
                    raise AssertionError(f"nginx did not start: {log}") from None
                time.sleep(0.05)  # polling nginx's port
        yield port, servers
    finally:
        nginx.terminate()
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(5)


def get(port: int, path: str = "/", **kw) -> dict:
    status, _, body = http_request(port, path=path, **kw)
    assert status == 200, body
    return json.loads(body)


def test_requests_spread_over_both_instances(proxied):
    port, _ = proxied
    seen = Counter(get(port)["instance"] for _ in range(40))
    assert set(seen) == {"a", "b"}
    assert min(seen.values()) >= 10, seen  # round robin: about half each


def test_client_address_reaches_the_app_through_x_forwarded_for(proxied):
    port, _ = proxied
    # the client comes from 127.0.0.2; nginx connects to tailfast from 127.0.0.1
    conn_from = ("127.0.0.2", 0)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=conn_from)
    try:
        conn.request("GET", "/", headers={"X-Forwarded-For": "6.6.6.6",
                                          "Forwarded": "for=7.7.7.7"})
        info = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    # the forged entries are left of the address nginx saw, or removed
    assert info["remote_addr"] == "127.0.0.2"
    assert info["scheme"] == "http"
    assert get(port)["remote_addr"] == "127.0.0.1"


def test_sigterm_to_one_instance_under_load_loses_no_request(proxied):
    port, (a, b) = proxied
    results: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 20  # bound in time as well as in count

    def client() -> None:
        for _ in range(60):
            if time.monotonic() > stop_at:
                break
            try:
                status, _, body = http_request(port, path="/slow?0.02", timeout=10)
                outcome = json.loads(body)["instance"] if status == 200 else f"status {status}"
            except Exception as exc:  # every failure is reported
                outcome = f"error {exc!r}"
            with lock:
                if outcome in ("a", "b"):
                    results[outcome] += 1
                else:
                    failures.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    # both instances are answering before one is stopped
    assert wait_until(lambda: results["a"] > 0 and results["b"] > 0, timeout=10), failures[:5]
    with lock:
        before = dict(results)
    a.signal(signal.SIGTERM)
    assert a.wait(15) == 0
    with lock:
        at_exit = dict(results)
    for t in threads:
        t.join(30)
    assert not failures, failures[:5]
    assert sum(results.values()) == 360
    assert before.get("a", 0) > 0 and before.get("b", 0) > 0
    # after a stopped, b answered everything
    assert results["a"] == at_exit.get("a", 0)
    assert results["b"] > at_exit.get("b", 0)
