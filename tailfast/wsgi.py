"""WSGI (PEP 3333) applications served through the native handler interface.

This first version buffers the application's output into one response; the
streaming, sendfile-backed version belongs to the handler-interface work.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from tailfast._core import Request, Response

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def build_environ(request: Request) -> dict[str, Any]:
    host = request.headers.get("host", "")
    name, _, port = host.rpartition(":") if host.rfind(":") > host.rfind("]") else (host, "", "")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        # PEP 3333: the decoded path as bytes, carried in a latin-1 str
        "PATH_INFO": unquote_to_bytes(request.raw_path).decode("latin-1"),
        "QUERY_STRING": request.query_string,
        "SERVER_NAME": name or "localhost",
        "SERVER_PORT": port or "80",
        "SERVER_PROTOCOL": request.http_version,
        "REMOTE_ADDR": request.remote_addr,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,  # from a trusted proxy (tailfast.proxy)
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for header, value in request.headers.items():
        key = header.upper().replace("-", "_")
        if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            environ[key] = value
            continue
        key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def wsgi_handler(app: WSGIApp) -> Callable[[Request], Response]:
    """A native handler that runs the WSGI application app."""

    def handle(request: Request) -> Response:
        started: list[Any] = []
        chunks: list[bytes] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            if exc_info is not None:
                try:
                    # nothing has been sent yet (output is buffered): replace
                    started.clear()
                finally:
                    exc_info = None
            elif started:
                raise AssertionError("start_response called twice without exc_info")
            started[:] = [status, headers]
            return chunks.append

        result = app(build_environ(request), start_response)
        try:
            for chunk in result:
                if chunk:
                    chunks.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not started:
            raise RuntimeError("the WSGI application did not call start_response")
        status, headers = started
        return Response(b"".join(chunks), status=int(status.split(" ", 1)[0]), headers=headers)

    return handle
