# Responses: Response/FileResponse, a handler's return value as a response, handed to C.
# Included by _core.pyx.


cdef bytes CT_OCTET = b"application/octet-stream"
cdef bytes CT_TEXT = b"text/plain; charset=utf-8"
cdef bytes CT_JSON = b"application/json"
cdef bytes ERROR_500 = b"500 Internal Server Error\n"
cdef bytes H_CONTENT_TYPE = b"Content-Type"

# Names a handler may not set: the server writes them itself.
cdef frozenset _RESERVED = frozenset({"content-length", "transfer-encoding", "date"})

# token characters of RFC 9110, for header-name validation
cdef bytes _TCHARS = (b"!#$%&'*+-.^_`|~0123456789"
                      b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class ResponseError(Exception):
    """A handler's return value cannot be sent as a valid response."""


cdef class Response:
    """A response with a status and headers: Response(body, status=200, headers=None, content_type=None)."""

    cdef public object body
    cdef public int status
    cdef public object headers
    cdef public object content_type

    def __init__(self, body=b"", int status=200, headers=None, content_type=None):
        self.body = body
        self.status = status
        self.headers = headers
        self.content_type = content_type

    def __repr__(self):
        return f"Response(status={self.status}, body={self.body!r:.40})"


cdef class FileResponse(Response):
    """A file sent with sendfile(2): FileResponse(path, status=200, headers=None,
    content_type=None). The content type is guessed from the name when not given;
    a missing file is a 404."""

    cdef public object path

    def __init__(self, path, int status=200, headers=None, content_type=None):
        Response.__init__(self, b"", status, headers, content_type)
        self.path = os.fspath(path)

    def __repr__(self):
        return f"FileResponse({self.path!r}, status={self.status})"


cdef inline bytes _dump_json(object value):
    if _orjson is not None:
        return _orjson.dumps(value)
    return _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


cdef bytes _encode_body(object body, list ctype_out):
    """Body bytes for a handler's body value; ctype_out[0] gets the default content type."""
    if type(body) is bytes:
        ctype_out[0] = CT_OCTET
        return <bytes>body
    if type(body) is str:
        ctype_out[0] = CT_TEXT
        return (<str>body).encode("utf-8")
    if isinstance(body, (dict, list)):
        ctype_out[0] = CT_JSON
        return _dump_json(body)
    if isinstance(body, (bytearray, memoryview)):
        ctype_out[0] = CT_OCTET
        return bytes(body)
    if body is None:
        ctype_out[0] = None
        return b""
    raise ResponseError(f"cannot send a body of type {type(body).__name__}")


cdef bytes _header_bytes(object text, str what):
    cdef bytes raw
    if isinstance(text, bytes):
        raw = <bytes>text
    elif isinstance(text, str):
        try:
            raw = (<str>text).encode("latin-1")
        except UnicodeEncodeError:
            raise ResponseError(f"header {what} {text!r} is not latin-1")
    else:
        raw = str(text).encode("latin-1")
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t i
    for i in range(PyBytes_GET_SIZE(raw)):
        # field-value is VCHAR, SP, HTAB and obs-text (RFC 9110 5.5): any other
        # control character, or DEL, would be read differently by each client
        if (p[i] < 0x20 and p[i] != 0x09) or p[i] == 0x7f:
            if p[i] == 0x0d or p[i] == 0x0a or p[i] == 0:
                raise ResponseError(f"header {what} {text!r} contains CR, LF or NUL")
            raise ResponseError(f"header {what} {text!r} contains a control character")
    return raw


cdef list _header_pairs(object headers):
    """[(name bytes, value bytes), ...] from a dict or an iterable of pairs, validated."""
    cdef list pairs = []
    cdef bytes name
    if headers is None:
        return pairs
    items = headers.items() if hasattr(headers, "items") else headers
    for item in items:
        try:
            key, value = item
        except (TypeError, ValueError):
            raise ResponseError(f"headers must be a dict or (name, value) pairs, got {item!r}")
        name = _header_bytes(key, "name")
        if not name or name.strip(_TCHARS):
            raise ResponseError(f"header name {key!r} is not a token")
        pairs.append((name, _header_bytes(value, "value")))
    return pairs


# Returned by a handler that answered the connection itself (the WSGI adapter).
ANSWERED = object()

cdef bint _answered = False  # this request's head has been handed to C


DEF _H_OTHER = 0
DEF _H_FRAMING = 1       # written by the server itself: dropped
DEF _H_CONNECTION = 2
DEF _H_CONTENT_TYPE = 3


cdef inline int _header_kind(bytes name):
    """What the server does with a response header, from its name (no copy)."""
    cdef const char *p = PyBytes_AS_STRING(name)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    if n == 12 and strncasecmp(p, b"content-type", 12) == 0:
        return _H_CONTENT_TYPE
    if ((n == 14 and strncasecmp(p, b"content-length", 14) == 0)
            or (n == 17 and strncasecmp(p, b"transfer-encoding", 17) == 0)
            or (n == 4 and strncasecmp(p, b"date", 4) == 0)):
        return _H_FRAMING
    if n == 10 and strncasecmp(p, b"connection", 10) == 0:
        return _H_CONNECTION
    return _H_OTHER


cdef Py_ssize_t _fill_headers(tf_header *hdrs, list pairs, object ctype, int *close_after):
    """Points hdrs at the validated pairs (plus a default Content-Type); the
    server's own framing headers are dropped. Returns the count."""
    global _answered
    cdef Py_ssize_t i = 0
    cdef bint has_ctype = False
    cdef bytes name, value
    _answered = True
    cdef int kind
    for name, value in pairs:
        kind = _header_kind(name)
        if kind == _H_FRAMING:
            continue
        if kind == _H_CONNECTION:
            if b"close" in value.lower():
                close_after[0] = 1
            continue
        if kind == _H_CONTENT_TYPE:
            has_ctype = True
        hdrs[i].name = PyBytes_AS_STRING(name)
        hdrs[i].name_len = PyBytes_GET_SIZE(name)
        hdrs[i].value = PyBytes_AS_STRING(value)
        hdrs[i].value_len = PyBytes_GET_SIZE(value)
        i += 1
    if not has_ctype and ctype is not None:
        hdrs[i].name = PyBytes_AS_STRING(H_CONTENT_TYPE)
        hdrs[i].name_len = PyBytes_GET_SIZE(H_CONTENT_TYPE)
        hdrs[i].value = PyBytes_AS_STRING(<bytes>ctype)
        hdrs[i].value_len = PyBytes_GET_SIZE(<bytes>ctype)
        i += 1
    return i


DEF _STACK_HEADERS = 16  # most responses: no allocation for the header array


cdef int _send(tf_conn *conn, int status, list pairs, object ctype, bytes body) except -1:
    """Writes a whole response through C: head built there, one writev."""
    return _hand_to_c(conn, status, pairs, ctype, body, -1)


cdef int _start(tf_conn *conn, int status, list pairs, object ctype,
                int64_t content_length) except -1:
    """Queues the head of a streamed response (see tf_conn_respond_start)."""
    return _hand_to_c(conn, status, pairs, ctype, None, content_length)


cdef int _hand_to_c(tf_conn *conn, int status, list pairs, object ctype, bytes body,
                    int64_t content_length) except -1:
    """The whole response when body is given, else the head of a streamed one."""
    cdef tf_header stack[_STACK_HEADERS]
    cdef tf_header *hdrs = stack
    cdef int close_after = 0
    cdef int r
    cdef Py_ssize_t n
    if len(pairs) + 1 > _STACK_HEADERS:
        hdrs = <tf_header *>malloc((len(pairs) + 1) * sizeof(tf_header))
        if hdrs == NULL:
            raise MemoryError()
    try:
        n = _fill_headers(hdrs, pairs, ctype, &close_after)
        if body is not None:
            r = tf_conn_respond(conn, status, hdrs, n, PyBytes_AS_STRING(body),
                                PyBytes_GET_SIZE(body), close_after)
        else:
            r = tf_conn_respond_start(conn, status, hdrs, n, content_length, close_after)
        if r < 0:
            raise ResponseError("response head too large")
    finally:
        if hdrs != stack:
            free(hdrs)
    return 0


cdef bint _write(tf_conn *conn, object chunk) except -1:
    """Writes one body chunk; False when the client is gone."""
    cdef bytes data
    if type(chunk) is bytes:
        data = <bytes>chunk
    elif type(chunk) is str:
        data = (<str>chunk).encode("utf-8")
    elif isinstance(chunk, (bytes, bytearray, memoryview)):
        data = bytes(chunk)
    else:
        raise ResponseError(f"a streamed body must yield bytes or str, got {type(chunk).__name__}")
    return tf_conn_write_body(conn, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)) == 0


cdef int _close_iterable(object iterable) except -1:
    close = getattr(iterable, "close", None)
    if close is not None:
        close()
    return 0


cdef object _END = object()


cdef int _stream(tf_conn *conn, int status, list pairs, object ctype, object body,
                 int64_t content_length) except -1:
    """Streams an iterable body: chunked on HTTP/1.1, until close on HTTP/1.0,
    never held whole in memory. The first chunk is taken here; the rest is
    pulled by the C loop as the client reads (_on_pull), which closes it."""
    cdef bint started = False
    cdef bint handed = False
    try:
        it = iter(body)
        # the first chunk before the head: an error before any output is still a clean 500
        first = next(it, _END)
        _start(conn, status, pairs, ctype, content_length)
        started = True
        if first is _END:
            tf_conn_respond_end(conn, 1)
        else:
            _pull_from(conn, first, it, body, False)  # the first chunk too: never a wait here
            handed = True
    except BaseException:
        if started:
            tf_conn_respond_end(conn, 0)  # the head is out: the body is cut
        raise
    finally:
        if not handed:
            _close_iterable(body)
    return 0


cdef class _Pull:
    """A streamed body the C loop pulls from (tf_conn_pull): the iterator, and
    the object whose close() ends it (PEP 3333 for WSGI)."""
    cdef object first  # the chunk taken before the head, written first (None: written)
    cdef object it
    cdef object body
    cdef bint wsgi  # chunks must be bytes; empty ones are skipped


cdef int _pull_from(tf_conn *conn, object first, object it, object body, bint wsgi) except -1:
    """Hands a streamed body (first, then the rest of it) to the loop; the
    connection holds a reference."""
    cdef _Pull p = _Pull.__new__(_Pull)
    p.first = first
    p.it = it
    p.body = body
    p.wsgi = wsgi
    Py_INCREF(p)  # dropped by _on_pull when the body ends or is aborted
    tf_conn_pull(conn, <void *>p)
    return 0


cdef int _on_pull(void *ctx, tf_conn *conn, void *source, int abort) noexcept:
    """The loop: the connection can take more of a pulled body (or, abort, is
    gone). Writes one chunk; returns 1 for more, 0 once ended and released."""
    cdef _Pull p = <_Pull>source
    cdef bint more = False
    try:
        if abort:
            return 0
        if p.first is not None:
            chunk, p.first = p.first, None
        else:
            chunk = next(p.it, _END)
        if chunk is _END:
            tf_conn_respond_end(conn, 1)
            return 0
        if p.wsgi:
            if type(chunk) is not bytes:
                raise TypeError(f"the application yielded {type(chunk).__name__}, not bytes")
            if not chunk:
                more = True
                return 1
        if not _write(conn, chunk):
            tf_conn_respond_end(conn, 0)  # the client went away: stop producing
            return 0
        more = True
        return 1
    except BaseException:
        _log(f"worker {_worker_id}: error in a streamed body; the response is cut", True)
        tf_conn_respond_end(conn, 0)
        return 0
    finally:
        if not more:
            Py_DECREF(p)  # the connection's reference; `p` holds its own
            try:
                _close_iterable(p.body)
            except BaseException:
                _log(f"worker {_worker_id}: error closing a streamed body", True)


cdef int _send_file(tf_conn *conn, FileResponse response, list pairs) except -1:
    """Sends a file with sendfile(2): the C loop keeps the descriptor and goes on
    with it on EPOLLOUT after the handler returned."""
    cdef int fd
    cdef int64_t size
    try:
        fd = os.open(response.path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        _send(conn, 404, [], CT_TEXT, b"404 Not Found\n")
        return 0
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            _send(conn, 404, [], CT_TEXT, b"404 Not Found\n")
            return 0
        size = st.st_size
        ctype = response.content_type
        if ctype is None:
            ctype = mimetypes.guess_type(response.path)[0] or "application/octet-stream"
        _start(conn, response.status, pairs, _header_bytes(ctype, "value"), size)
        if tf_conn_sendfile(conn, fd, 0, size) < 0:
            tf_conn_respond_end(conn, 0)
        else:
            tf_conn_respond_end(conn, 1)
    finally:
        os.close(fd)
    return 0


cdef inline bint _is_stream(object body):
    return hasattr(body, "__next__") or (hasattr(body, "__iter__") and not isinstance(
        body, (bytes, str, dict, list, tuple, bytearray, memoryview)))


cdef int _respond(tf_conn *conn, object result) except -1:
    """Turns a handler's return value into a response and sends it."""
    cdef tf_header hdr
    cdef Response response
    global _answered

    # fast path: the most common answer, a bytes body
    if type(result) is bytes:
        hdr.name = PyBytes_AS_STRING(H_CONTENT_TYPE)
        hdr.name_len = PyBytes_GET_SIZE(H_CONTENT_TYPE)
        hdr.value = PyBytes_AS_STRING(CT_OCTET)
        hdr.value_len = PyBytes_GET_SIZE(CT_OCTET)
        tf_conn_respond(conn, 200, &hdr, 1, PyBytes_AS_STRING(<bytes>result),
                        PyBytes_GET_SIZE(<bytes>result), 0)
        _answered = True
        return 0

    if result is ANSWERED:
        return 0
    if result is None:
        _send(conn, 204, [], None, b"")
        return 0
    if isinstance(result, FileResponse):
        response = <Response>result
        _check_status(response.status)
        _send_file(conn, <FileResponse>result, _header_pairs(response.headers))
        return 0
    if isinstance(result, Response):
        response = <Response>result
        return _send_value(conn, response.body, response.status, response.headers,
                           response.content_type)
    if type(result) is tuple:
        return _send_tuple(conn, <tuple>result)
    if inspect.iscoroutine(result):
        result.close()
        raise ResponseError("the handler returned a coroutine: declare the handler "
                            "`async def` to have it awaited")
    return _send_value(conn, result, 200, None, None)


cdef inline int _check_status(int status) except -1:
    # a 1xx is interim, never the answer: sent as one, the client would read the
    # next response on the connection as this request's (RFC 9110 15.2)
    if status < 200 or status > 999:
        raise ResponseError(f"invalid status {status}: a final status is 200-999")
    return 0


cdef int _send_tuple(tf_conn *conn, tuple result) except -1:
    """Sends a (body, status) or (body, status, headers) answer."""
    headers = None
    if len(result) == 2:
        value, status_obj = result
    elif len(result) == 3:
        value, status_obj, headers = result
    else:
        raise ResponseError("a returned tuple must be (body, status) or (body, status, headers), "
                            f"got {len(result)} items")
    if type(status_obj) is not int:
        raise ResponseError(f"status must be an int, got {status_obj!r}")
    return _send_value(conn, value, status_obj, headers, None)


cdef int _send_value(tf_conn *conn, object value, int status, object headers,
                     object explicit_ctype) except -1:
    """Sends a body value (bytes, str, dict/list as JSON, an iterable streamed)."""
    cdef list ctype = [None]
    cdef bytes body = None
    _check_status(status)
    pairs = _header_pairs(headers)
    cdef bint stream = _is_stream(value)
    if stream:
        ctype[0] = CT_OCTET
    else:
        body = _encode_body(value, ctype)
    if explicit_ctype is not None:
        ctype[0] = _header_bytes(explicit_ctype, "value")
    if stream:
        _stream(conn, status, pairs, ctype[0], value, -1)
    else:
        _send(conn, status, pairs, ctype[0], body)
    return 0
