"""Apps that read request bodies as they arrive (test_request_streaming.py, bench)."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable

import tailfast

StartResponse = Callable[..., object]


def wsgi_hash(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    """Hashes wsgi.input read in 64 KiB pieces; /refuse answers 401 without reading,
    /partial reads 1000 bytes, /lines counts lines, /all reads it with read()."""
    path = environ["PATH_INFO"]
    body = environ["wsgi.input"]
    if path == "/refuse":
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"no\n"]
    if path == "/partial":
        got = body.read(1000)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"partial %d\n" % len(got)]
    if path == "/lines":
        lines = sum(1 for _ in body)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"lines %d\n" % lines]
    if path == "/all":
        data = body.read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())]
    digest = hashlib.sha256()
    size = 0
    try:
        while True:
            chunk = body.read(65536)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    except tailfast.ClientDisconnected:
        print(f"upload ended early after {size} bytes", file=sys.stderr, flush=True)
        raise
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d %s\n" % (size, digest.hexdigest().encode())]


def native_hash(request: tailfast.Request) -> bytes:
    """The same with request.stream() (/body: request.body)."""
    if request.path == "/refuse":
        return tailfast.Response(b"no\n", status=401)
    if request.path == "/body":
        data = request.body
        return b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())
    digest = hashlib.sha256()
    size = 0
    for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return b"%d %s\n" % (size, digest.hexdigest().encode())


def gated(request: tailfast.Request) -> bytes:
    """Waits for the file $UPLOAD_GATE before it reads the body (100-continue tests)."""
    gate = os.environ["UPLOAD_GATE"]
    deadline = time.monotonic() + 10
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return native_hash(request)
