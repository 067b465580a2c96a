"""Servers that are not tailfast for bench/: started from a command line, pinned, stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from tailfast.testing import server_env

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


class Peer:
    """A server started from a command line in a session of its own, pinned to
    cpus, with the harness's environment (this tree and tests/apps on the path)."""

    def __init__(self, command: list[str], port: int, cpus: Iterable[int],
                 cwd: str | None = None) -> None:
        pin = set(cpus)
        self.port = port
        self.proc = subprocess.Popen(command, env=server_env(), cwd=cwd or str(ROOT),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=lambda: os.sched_setaffinity(0, pin),
                                     start_new_session=True)
        try:
            wait_port(port, self.proc)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        # The peer's own process group: its workers (gunicorn, nginx) go with it.
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log stderr error;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "Hello, World!"; }}
    }}
}}
"""


def nginx_command(tmp: Path, port: int) -> list[str] | None:
    """nginx `return 200` with one worker process on 127.0.0.1:port, its files in
    tmp (created); None when nginx is not installed."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if nginx is None:
        return None
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp, port=port,
                                      user="user root;" if os.geteuid() == 0 else ""))
    return [nginx, "-c", str(conf), "-p", str(tmp), "-e", "stderr"]
