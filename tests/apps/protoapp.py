"""Handlers for the HTTP protocol tests: echo what was parsed, count calls."""

import os

from tailfast import Response

calls = 0


def app(request):
    global calls
    calls += 1
    if request.path == "/count":
        return f"{calls - 1}"  # handler calls before this one, in this worker
    if request.path == "/pid":
        return f"{os.getpid()}"
    headers = {
        "X-Method": request.method,
        "X-Target": request.raw_path + ("?" + request.query_string if request.query_string else ""),
        "X-Version": request.http_version,
        "X-Body-Length": str(len(request.body)),
        "X-Header-Count": str(len(list(request.headers.items()))),
    }
    return Response(request.body, headers=headers)
