"""WSGI (PEP 3333) applications on tailfast's native interface.

The environ is built by the Cython layer straight from the parsed head; the
response goes out through the C writer: one writev for a response whose
length is known, chunked (HTTP/1.1) or close-delimited (HTTP/1.0) streaming
for an iterable without a length, sendfile(2) for wsgi.file_wrapper.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from tailfast._core import ANSWERED, Request, validate_headers
from tailfast.errors import ClientDisconnected

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_STATUS = re.compile(r"[1-9][0-9]{2} [^\r\n]*\Z")


class FileWrapper:
    """wsgi.file_wrapper: returned by an application, the server sends the file
    with sendfile(2) when it is a regular file; otherwise it is iterated."""

    def __init__(self, filelike: IO[bytes], blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self.filelike.read(self.blksize)
            if not block:
                return
            yield block

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


def _file_span(wrapper: FileWrapper) -> tuple[int, int, int] | None:
    """(fd, offset, size from offset) when the wrapped file can be sent with sendfile."""
    try:
        fd = wrapper.filelike.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        offset = wrapper.filelike.tell() if hasattr(wrapper.filelike, "tell") else 0
    except (AttributeError, OSError, ValueError):
        return None
    return fd, offset, max(0, st.st_size - offset)


class _Exchange:
    """One request's start_response / write() state."""

    __slots__ = ("request", "status", "pairs", "length", "sent", "complete")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.status = 0
        self.pairs: list[tuple[bytes, bytes]] = []
        self.length = -1  # the application's Content-Length, -1 when it gave none
        self.sent = False
        self.complete = True

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.sent:
                    # PEP 3333: too late to change the answer; the error goes on up
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status:
            raise AssertionError("start_response called a second time without exc_info")
        if type(status) is not str or not _STATUS.match(status):
            raise ValueError(f"invalid WSGI status {status!r}: expected '200 OK'")
        if type(headers) is not list:
            raise TypeError(f"headers must be a list, got {type(headers).__name__}")
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                raise TypeError(f"each header must be a (name, value) tuple, got {item!r}")
            if type(item[0]) is not str or type(item[1]) is not str:
                raise TypeError(f"header names and values must be str, got {item!r}")
        pairs = validate_headers(headers)
        length = -1
        for name, value in pairs:
            if name.lower() == b"content-length":
                if not value.strip().isdigit():
                    raise ValueError(f"invalid Content-Length {value!r}")
                length = int(value)
        self.status = int(status[:3])
        self.pairs = pairs
        self.length = length
        return self.write

    def _send_head(self) -> None:
        if not self.status:
            raise AssertionError("the application wrote a body before calling start_response")
        self.request._start(self.status, self.pairs, self.length)
        self.sent = True

    def write(self, data: bytes) -> None:
        """The PEP's write() callable: the bytes go out before it returns."""
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, got {type(data).__name__}")
        if not self.sent:
            self._send_head()
        if not self.request._write(data):
            self.complete = False
            raise ClientDisconnected("the client went away")

    def finish(self, result: Iterable[bytes]) -> None:
        """Sends what the application returned, then ends the response."""
        request = self.request
        if not self.sent:
            if type(result) is list and len(result) == 1 and type(result[0]) is bytes:
                body = result[0]
                if self.length < 0 or self.length == len(body):
                    # the common case: the whole answer in one writev
                    if not self.status:
                        raise AssertionError("the application did not call start_response")
                    request._respond_whole(self.status, self.pairs, body)
                    self.sent = True
                    return
            elif type(result) is FileWrapper and self.status:
                span = _file_span(result)
                if span is not None:
                    fd, offset, size = span
                    count = size if self.length < 0 else min(size, self.length)
                    self.request._start(self.status, self.pairs,
                                        count if self.length < 0 else self.length)
                    self.sent = True
                    request._sendfile(fd, offset, count)
                    request._end(True)
                    return
        try:
            for chunk in result:
                if type(chunk) is not bytes:
                    raise TypeError(f"the application yielded {type(chunk).__name__}, not bytes")
                if not chunk:
                    continue  # PEP 3333: the head waits for the first non-empty chunk
                if not self.sent:
                    self._send_head()
                if not request._write(chunk):
                    self.complete = False
                    break  # the client went away: stop iterating
            if not self.sent:
                self._send_head()  # an empty body
        except BaseException:
            if self.sent:
                request._end(False)  # the head is out: cut the connection
            raise
        request._end(self.complete)


def wsgi_handler(app: WSGIApp, script_name: str = "") -> Callable[[Request], object]:
    """A native handler that runs the WSGI application app (mounted at script_name)."""
    base: dict[str, Any] = {
        "SCRIPT_NAME": script_name.rstrip("/"),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,  # the body is complete: read() to EOF is safe
        "wsgi.file_wrapper": FileWrapper,
    }

    def handle(request: Request) -> object:
        exchange = _Exchange(request)
        try:
            result = app(request._wsgi_environ(base), exchange.start_response)
        except ClientDisconnected:
            return ANSWERED  # write() found the client gone; nothing left to send
        try:
            exchange.finish(result)
        except ClientDisconnected:
            pass  # close() below still runs
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return ANSWERED

    return handle
