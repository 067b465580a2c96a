"""The apps every server compared in bench/ runs: hello world, and handlers that wait."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

BODY = b"Hello, World!"
# A stand-in for a database call: the handler waits without using the CPU.
WAIT_SECONDS = 0.02
WAIT_PATH = "/wait"


def native(request: Any) -> bytes:
    return BODY


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


async def asgi(scope: dict[str, Any], receive: Callable[..., Any],
               send: Callable[..., Any]) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def native_wait(request: Any) -> bytes:
    time.sleep(WAIT_SECONDS)
    return BODY


def wsgi_wait(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    time.sleep(WAIT_SECONDS)
    return wsgi(environ, start_response)


def native_mixed(request: Any) -> bytes:
    """Waits on WAIT_PATH, answers at once on any other path."""
    if request.path == WAIT_PATH:
        time.sleep(WAIT_SECONDS)
    return BODY


def wsgi_mixed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Waits on WAIT_PATH, answers at once on any other path."""
    if environ.get("PATH_INFO") == WAIT_PATH:
        time.sleep(WAIT_SECONDS)
    return wsgi(environ, start_response)
