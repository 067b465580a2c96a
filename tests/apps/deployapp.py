"""Handlers for the deployment tests: who is the client, which instance answered."""

import os
import time


def app(request):
    if request.path == "/slow":
        time.sleep(float(request.query_string or "0.05"))
    return {
        "instance": os.environ.get("INSTANCE", ""),
        "pid": os.getpid(),
        "path": request.path,
        "remote_addr": request.remote_addr,
        "scheme": request.scheme,
    }


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']}".encode()]


def status_app(request):
    """/status/NNN answers NNN; /slow?S sleeps S seconds first."""
    if request.path == "/slow":
        time.sleep(float(request.query_string or "0.05"))
        return b"slow"
    if request.path.startswith("/status/"):
        return b"", int(request.path.rsplit("/", 1)[1])
    return b"ok"


def broken(request):
    """Every request fails: whatever answers 200 did not call the application."""
    raise RuntimeError("the application is down")
