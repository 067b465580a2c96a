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
