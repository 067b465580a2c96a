"""WSGI applications for tests/test_wsgi.py, including a PEP 3333 checker."""

import os
import sys
from wsgiref.validate import validator

REQUIRED = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
            "SERVER_PORT", "SERVER_PROTOCOL", "wsgi.version", "wsgi.url_scheme", "wsgi.input",
            "wsgi.errors", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once")


def _report(environ):
    """Every check on environ that PEP 3333 asks for; a list of problems."""
    problems = []
    for key in REQUIRED:
        if key not in environ:
            problems.append(f"missing {key}")
    for key, value in environ.items():
        if key.isupper() and type(value) is not str:
            problems.append(f"{key} is {type(value).__name__}")
        if key.isupper():
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                problems.append(f"{key} is not latin-1")
    if environ["wsgi.version"] != (1, 0):
        problems.append("wsgi.version")
    if (environ["wsgi.multithread"], environ["wsgi.multiprocess"], environ["wsgi.run_once"]) != (
            False, True, False):
        problems.append("multithread/multiprocess/run_once")
    if environ["wsgi.url_scheme"] != "http":
        problems.append("url_scheme")
    if "HTTP_CONTENT_TYPE" in environ or "HTTP_CONTENT_LENGTH" in environ:
        problems.append("content headers with HTTP_ prefix")
    return problems


def raw_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/environ":
        body = repr({
            "problems": _report(environ),
            "method": environ["REQUEST_METHOD"],
            "script_name": environ["SCRIPT_NAME"],
            "path_info": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "content_type": environ.get("CONTENT_TYPE"),
            "content_length": environ.get("CONTENT_LENGTH"),
            "server": (environ["SERVER_NAME"], environ["SERVER_PORT"]),
            "protocol": environ["SERVER_PROTOCOL"],
            "remote": (environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")),
            "x_multi": environ.get("HTTP_X_MULTI"),
            "x_under": environ.get("HTTP_X_UNDER"),
            "terminated": environ.get("wsgi.input_terminated"),
            "has_file_wrapper": callable(environ.get("wsgi.file_wrapper")),
            "errors_writable": callable(getattr(environ["wsgi.errors"], "write", None)),
        }).encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]
    if path == "/input":
        inp = environ["wsgi.input"]
        first = inp.readline()
        two = inp.read(2)
        rest_lines = inp.readlines()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr((first, two, rest_lines, inp.read(100))).encode()]
    if path == "/input-iter":
        lines = list(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(lines).encode()]
    if path == "/read-all":
        data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [data]
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"twice ")
        return [b"then returned"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part %d\n" % i for i in range(5))
    if path == "/empty-first":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"", b"", b"after empties"])
    if path == "/length":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return iter([b"12", b"345", b"6789"])  # more than announced: cut at 5
    if path == "/exc-info":
        try:
            raise ValueError("before any output")
        except ValueError:
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Early", "1")])
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")],
                           sys.exc_info())
        return [b"replaced"]
    if path == "/exc-info-late":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"already sent")
        try:
            raise KeyError("after output")
        except KeyError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                           sys.exc_info())  # re-raises
        return [b"never"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        f = open(environ["QUERY_STRING"], "rb")
        f.seek(int(environ.get("HTTP_X_SEEK", "0")))
        return environ["wsgi.file_wrapper"](f, 8192)
    if path == "/closed":
        return Closing(environ["QUERY_STRING"], start_response)
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: 1")])
        return [b"x"]
    if path == "/bad-status":
        start_response("OK", [])
        return [b"x"]
    if path == "/no-start":
        return [b"forgot start_response"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


class Closing:
    """An iterable that records its close() to a file, streaming many blocks."""

    def __init__(self, marker, start_response):
        self.marker = marker
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def __iter__(self):
        for _ in range(100000):
            yield b"z" * 65536

    def close(self):
        with open(self.marker, "w") as f:
            f.write(f"closed {os.getpid()}")


validated_app = validator(raw_app)


def mounted_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()]
