"""Native and WSGI applications for tests/test_hardening_responses.py."""

from urllib.parse import parse_qs

from tailfast import Response


def app(request):
    """Native: /status?s=N answers status N; /header?v=<code point> sends that
    character in a header value, /name?v=... in a header name."""
    path = request.path
    if path == "/status":
        return Response(b"x", status=int(request.query["s"]))
    if path == "/tuple-status":
        return b"x", int(request.query["s"])
    if path == "/header":
        return b"x", 200, [("X-Test", "a" + chr(int(request.query["v"])) + "b")]
    if path == "/name":
        return b"x", 200, [("X" + chr(int(request.query["v"])) + "T", "v")]
    if path == "/ctype":
        return Response(b"x", content_type="text/plain" + chr(int(request.query["v"])))
    if path == "/host":
        return {"host": request.host, "path": request.path, "raw_path": request.raw_path,
                "query": request.query_string, "header": request.headers.get("host")}
    return b"ok"


def wsgi_app(environ, start_response):
    """WSGI: the same routes as app, through start_response."""
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
    if path == "/status":
        start_response(query["s"], [("Content-Type", "text/plain")])
        return [b"x"]
    if path == "/header":
        start_response("200 OK", [("X-Test", "a" + chr(int(query["v"])) + "b")])
        return [b"x"]
    if path == "/name":
        start_response("200 OK", [("X" + chr(int(query["v"])) + "T", "v")])
        return [b"x"]
    if path == "/host":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr((environ.get("HTTP_HOST"), environ["SERVER_NAME"], environ["SERVER_PORT"],
                      environ["PATH_INFO"], environ["QUERY_STRING"])).encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

