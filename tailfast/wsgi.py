"""WSGI (PEP 3333) applications on tailfast.

The adapter lives in the Cython layer (tailfast/_wsgi.pxi): the environ is
built from the parsed head, and the response goes out through the C writer —
one writev for a response whose length is known, chunked (HTTP/1.1) or
close-delimited (HTTP/1.0) streaming for an iterable without a length,
sendfile(2) for wsgi.file_wrapper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tailfast._core import FileWrapper, WSGIHandler

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

__all__ = ["FileWrapper", "WSGIApp", "wsgi_handler"]


def wsgi_handler(app: WSGIApp, script_name: str = "") -> Callable[..., object]:
    """A native handler that runs the WSGI application app (mounted at script_name)."""
    return WSGIHandler(app, script_name)
