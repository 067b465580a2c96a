"""Handlers used by the process tests."""

import os
import time

import tailfast
from tailfast import Response

_kept: list[bytes] = []


def app(request):
    path = request.path
    if path == "/":
        return b"Hello, World!"
    if path == "/pid":
        return f"{os.getpid()} {tailfast.get_worker_id()}"
    if path == "/slow":
        time.sleep(float(request.query_string or "1"))
        return f"slept {os.getpid()}"
    if path == "/raise":
        raise RuntimeError("handler failed on purpose")
    if path == "/echo":
        return Response(request.body, headers={"X-Method": request.method})
    if path == "/json":
        return {"method": request.method, "query": request.query_string, "list": [1, 2]}
    if path == "/list":
        return [1, "two"]
    if path == "/none":
        return None
    if path == "/tuple":
        return "created", 201
    if path == "/tuple3":
        return b"teapot", 418, [("X-One", "1"), ("X-Two", "2")]
    if path == "/headers":
        h = request.headers
        return {
            "host": h.get("HOST"),
            "x-multi": h.get_all("x-multi"),
            "has_accept": "Accept" in h,
            "missing": h.get("x-missing", "default"),
        }
    if path == "/badheader":
        return Response(b"x", headers={"X-Bad": "a\r\nInjected: yes"})
    if path == "/badstatus":
        return b"x", 42
    if path == "/badtype":
        return 12345
    if path == "/env":
        return os.environ.get("APP_SETTING", "<unset>")
    if path == "/environ":
        return os.environ.get(request.query_string, "<unset>")
    if path == "/info":
        return {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query_string": request.query_string,
            "http_version": request.http_version,
            "remote_addr": request.remote_addr,
            "worker_id": request.worker_id,
        }
    if path == "/exit":
        os._exit(7)
    if path == "/grow":
        # memory that stays: touched pages count in the RSS
        _kept.append(b"x" * (int(request.query_string or "64") << 20))
        return f"grew {os.getpid()}"
    if path == "/orphan":
        # a grandchild whose parent exits at once: it is re-parented to the
        # nearest subreaper (or PID 1), which must reap it
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:
            grandchild = os.fork()
            if grandchild == 0:
                time.sleep(float(request.query_string or "0.3"))
                os._exit(0)
            os.write(w, str(grandchild).encode())
            os._exit(0)
        os.close(w)
        grandchild_pid = int(os.read(r, 32))
        os.close(r)
        os.waitpid(middle, 0)
        return str(grandchild_pid)
    return Response(b"not found", status=404)


def not_callable_holder():
    return None


value = 42


def timeouts(request):
    """Handlers for the --timeout tests."""
    path = request.path
    if path == "/pid":
        return str(os.getpid())
    if path == "/sleep":
        time.sleep(float(request.query_string or "5"))
        return f"slept {os.getpid()}"
    if path == "/ctypes-sleep":
        import ctypes

        ctypes.CDLL(None).sleep(int(request.query_string or "5"))
        return f"slept in C {os.getpid()}"
    if path == "/spin":
        # a C loop that never checks for signals: only SIGKILL ends it
        return str(sum(range(10**13)))
    if path == "/swallow":
        try:
            time.sleep(float(request.query_string or "5"))
        except tailfast.RequestTimeout:
            return "caught"
        return "not interrupted"
    return Response(b"not found", status=404)
