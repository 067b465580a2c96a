"""Streamed 25 MiB bodies (native and WSGI) whose close() is counted, for backpressure tests."""

CHUNK = b"x" * 65536
CHUNKS = 400  # 25 MiB
CLOSED: list[str] = []


def _body(kind: str):
    try:
        for _ in range(CHUNKS):
            yield CHUNK
    finally:
        CLOSED.append(kind)  # runs on close(): a dropped client ends the generator


def app(request):
    if request.path == "/big":
        return _body("native")
    if request.path == "/closed":
        return ",".join(CLOSED)
    return b"hello"


def wsgi(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _body("wsgi")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [",".join(CLOSED).encode() if path == "/closed" else b"hello"]
