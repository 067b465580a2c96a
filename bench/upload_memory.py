"""One large upload through wsgi.input (issue 17): the worker's peak RSS over its idle RSS.

The application reads wsgi.input in 64 KiB pieces and hashes them. Each server
runs one worker with no body limit; a 4 MiB upload warms it up, then its
VmHWM is reset (/proc/PID/clear_refs) and one SIZE upload is sent on one
connection. Printed per server: idle RSS, peak RSS during the upload, the
difference, MB/s, and whether the answer (length and SHA-256) is right.

    python bench/upload_memory.py                # 200 MB, tailfast inline and --threads 4, gunicorn
    python bench/upload_memory.py --size 64

gunicorn (sync worker, the same application) is the reference; it is
skipped when not installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tailfast.testing import Server, children, parse_whole, server_env, wait_until  # noqa: E402


def app(environ: dict, start_response: Callable[..., object]) -> Iterable[bytes]:
    """Hashes wsgi.input in 64 KiB reads; answers "<length> <sha256>"."""
    body = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = body.read(65536)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d %s" % (size, digest.hexdigest().encode())]


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def upload(port: int, block: bytes, count: int) -> tuple[bytes, float]:
    """count x block as one Content-Length body; (the response body, seconds)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n" % (len(block) * count))
        for _ in range(count):
            s.sendall(block)
        reply = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            reply += data
    return parse_whole(reply).body, time.perf_counter() - started  # gunicorn answers chunked


def measure(name: str, port: int, pid: int, size_mb: int) -> None:
    block = os.urandom(1 << 20)
    upload(port, block, 4)  # imports, pools, buffers settle
    idle = vm_kib(pid, "VmRSS")
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM restarts from the current RSS
    body, seconds = upload(port, block, size_mb)
    peak = vm_kib(pid, "VmHWM")
    digest = hashlib.sha256()
    for _ in range(size_mb):
        digest.update(block)
    right = body == b"%d %s" % (len(block) * size_mb, digest.hexdigest().encode())
    print(f"{name:<28} {idle / 1024:8.1f} {peak / 1024:8.1f} {(peak - idle) / 1024:+8.1f}"
          f" {size_mb * 1.048576 / seconds:8.0f}   {'yes' if right else 'NO: ' + repr(body[:80])}")


def run_tailfast(name: str, size_mb: int, extra: list[str]) -> None:
    with Server(["bench.upload_memory:app", "--bind", "127.0.0.1:0", "--workers", "1",
                 "--limit-request-body", "0", *extra], cwd=ROOT) as server:
        server.wait_listening()
        (pid,) = server.live_workers().values()
        measure(name, server.port, pid, size_mb)


def run_gunicorn(size_mb: int) -> None:
    if find_spec("gunicorn") is None:
        print(f"{'gunicorn (sync)':<28} not installed")
        return
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "-b",
                             f"127.0.0.1:{port}", "bench.upload_memory:app"],
                            cwd=ROOT, env=server_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: children(proc.pid), timeout=15)

        def answering() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(answering, timeout=15)
        (pid,) = children(proc.pid)
        measure("gunicorn (sync)", port, pid, size_mb)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200, help="upload size in MiB (default 200)")
    args = parser.parse_args()
    print(f"one {args.size} MiB upload through wsgi.input, 64 KiB reads, one worker")
    print(f"{'server':<28} {'idle MB':>8} {'peak MB':>8} {'added':>8} {'MB/s':>8}   right")
    run_tailfast("tailfast (inline)", args.size, [])
    run_tailfast("tailfast (--threads 4)", args.size, ["--threads", "4"])
    run_gunicorn(args.size)


if __name__ == "__main__":
    main()
