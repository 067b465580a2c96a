"""Echo handler for the request corpus (tests/test_http_corpus.py): returns what
the parser handed to Python as JSON, so that a case can state the fields it expects."""


calls = 0


def app(request):
    global calls
    calls += 1
    if request.raw_path == "/__count":
        return f"{calls - 1}"  # handler calls before this one, in this worker
    return {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "query": request.query_string,
        "version": request.http_version,
        # every field in order, names as sent: trailers must not appear here
        "headers": [[name, value] for name, value in request.headers.items()],
        # latin-1 maps each byte to one code point, so any body survives JSON
        "body": request.body.decode("latin-1"),
    }
