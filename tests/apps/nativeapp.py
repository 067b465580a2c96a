"""Native handlers for tests/test_native_api.py."""

import json
import os
import time

import tailfast
from tailfast import BadRequest, FileResponse, Response

SEEN: list[str] = []


def app(request):
    path = request.path
    if path == "/attrs":
        h = request.headers
        return {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query_string": request.query_string,
            "query": request.query.to_dict(),
            "first_a": request.query.get("a"),
            "cookies": request.cookies,
            "headers": [list(p) for p in h.items()],
            "names": list(h),
            "x_multi": h.get_all("X-MULTI"),
            "body": request.body.decode("latin-1"),
            "remote_addr": request.remote_addr,
            "remote_port": request.remote_port,
            "http_version": request.http_version,
            "worker_id": request.worker_id,
            "same_headers": request.headers is request.headers,
            "same_query": request.query is request.query,
        }
    if path == "/json":
        data = request.json()
        return {"got": data}
    if path == "/json-caught":
        try:
            request.json()
        except ValueError as exc:  # BadRequest is a ValueError
            return Response(f"caught: {type(exc).__name__}", status=422)
        return "parsed"
    if path == "/teapot":
        raise BadRequest("custom refusal")
    if path == "/str":
        return "héllo"
    if path == "/resp-ctype":
        return Response("<b>x</b>", status=201, headers={"X-A": "1"}, content_type="text/html")
    if path == "/gen":
        n = int(request.query.get("n", "3"))
        return (f"chunk {i}\n".encode() for i in range(n))
    if path == "/gen-slow":
        def slow():
            yield b"first\n"
            time.sleep(1.5)
            yield b"second\n"
        return slow()
    if path == "/gen-big":
        mb = int(request.query.get("mb", "50"))
        block = b"x" * (1 << 20)
        return Response((block for _ in range(mb)), content_type="application/x-big")
    if path == "/gen-fail-first":
        def fail():
            raise RuntimeError("generator failed before any output")
            yield b""
        return fail()
    if path == "/gen-fail-later":
        def fail_later():
            yield b"partial\n"
            raise RuntimeError("generator failed mid-stream")
        return fail_later()
    if path == "/gen-closed":
        marker = request.query["file"]

        def tracked():
            try:
                for _ in range(100000):
                    yield b"y" * 65536
            finally:
                with open(marker, "w") as f:
                    f.write("closed")
        return tracked()
    if path == "/file":
        return FileResponse(request.query["p"])
    if path == "/file-ct":
        return FileResponse(request.query["p"], headers={"X-File": "yes"},
                            content_type="application/x-custom")
    if path == "/bad-name":
        return Response(b"x", headers={"Bad Name": "v"})
    if path == "/bad-value-lf":
        return b"x", 200, [("X-Ok", "fine\nInjected: 1")]
    if path == "/bad-status":
        return Response(b"x", status=1000)
    if path == "/coroutine":
        async def later():
            return b"never"
        return later()
    if path == "/pid":
        return f"{os.getpid()} {tailfast.get_worker_id()}"
    return Response(json.dumps({"path": path}), status=404)


async def async_handler(request):
    return b"never served"


class AsyncCallable:
    async def __call__(self, request):
        return b"never"


def three_args(a, b, c):
    return b""
ASYNC_INSTANCE = AsyncCallable()
