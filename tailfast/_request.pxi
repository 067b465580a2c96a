# The Request view: a lazy window on the parsed request in the connection's buffer.
# Included by _core.pyx.

from libc.string cimport memchr


cdef bint _has_forwarding_headers(const tf_request *req):
    """Whether the request carries X-Forwarded-For/-Proto or Forwarded."""
    cdef size_t i
    cdef const tf_header *h
    for i in range(req.num_headers):
        h = &req.headers[i]
        if h.name_len == 9 and strncasecmp(h.name, b"forwarded", 9) == 0:
            return True
        if h.name_len >= 15 and strncasecmp(h.name, b"x-forwarded-", 12) == 0:
            return True
    return False


cdef object _target_authority(const tf_request *req):
    """The authority of an absolute-form target ("h:8080" of "http://h:8080/p"),
    else None. RFC 9112 3.2.2: it names the host, not the Host field."""
    cdef const char *t = req.target
    if req.target_len == 0 or t[0] == b"/" or t[0] == b"*":
        return None
    # the parser checked scheme "://" (a scheme holds no ':'); the authority
    # runs from there to where the path starts
    cdef const char *start = <const char *>memchr(t, b":", req.target_len) + 3
    return start[:req.path - start].decode("latin-1")


cdef str _method_str(const char *p, size_t n):
    # the common methods as interned constants: no new object per request
    if n == 3 and memcmp(p, b"GET", 3) == 0:
        return "GET"
    if n == 4 and memcmp(p, b"POST", 4) == 0:
        return "POST"
    if n == 4 and memcmp(p, b"HEAD", 4) == 0:
        return "HEAD"
    if n == 3 and memcmp(p, b"PUT", 3) == 0:
        return "PUT"
    if n == 6 and memcmp(p, b"DELETE", 6) == 0:
        return "DELETE"
    return p[:n].decode("latin-1")


cdef object _body_error(int err):
    """The exception a failed read of a streamed body raises (errno from csrc/body.c)."""
    if err == ETIMEDOUT:
        return BodyTimeout("no request body bytes arrived within --body-timeout")
    if err == EMSGSIZE:
        return PayloadTooLarge("the request body is larger than --limit-request-body")
    if err == EBADMSG:
        return BadRequest("the chunked request body is malformed")
    return ClientDisconnected(err, "the client went away before the request body ended")


cdef extern from "Python.h":
    # as raw pointers: _PyBytes_Resize needs the only reference, held in C
    PyObject *_new_bytes "PyBytes_FromStringAndSize"(const char *data, Py_ssize_t size)
    char *_bytes_data "PyBytes_AS_STRING"(PyObject *o) nogil
    void _drop "Py_XDECREF"(PyObject *o)


cdef bytes _read_unlocked(tf_body *b, Py_ssize_t n):
    """A runner's read: at most n bytes into a new bytes object, the wait and the
    copy without the GIL, the object cut to what arrived (no second copy)."""
    cdef PyObject *raw = _new_bytes(NULL, n)
    cdef ssize_t got
    cdef int err = 0
    if raw == NULL:
        raise MemoryError()
    cdef char *buf = _bytes_data(raw)
    with nogil:
        got = tf_body_read(b, buf, <size_t>n)
        if got < 0:
            err = errno
    if got < 0:
        _drop(raw)
        raise _body_error(err)
    if got < n:
        _PyBytes_Resize(&raw, got)  # on failure raw is freed and set to NULL; raises
    cdef bytes out = <bytes>raw
    Py_DECREF(out)  # the reference raw held is out's now
    return out


DEF _STREAM_CHUNK = 65536  # request.stream()'s default piece


cdef inline void _attach_body(Request request, tf_conn *conn, const char *body,
                              size_t body_len) noexcept:
    """on_request's body for request: whole (body, body_len), or, body NULL,
    streamed from the connection (tf_conn_body; csrc/tailfast.h)."""
    request._body_ptr = body
    request._body_len = body_len
    if body == NULL:
        request._stream = tf_conn_body(conn)
        request._streamed = True


cdef class Request:
    """One HTTP request. Fields are read from the connection's buffer when first
    used; a Request kept after the handler returns is copied out first. A large
    body (or one behind Expect: 100-continue) is read from the connection while
    the handler runs: request.body (all of it) or request.stream() (pieces)."""

    cdef const tf_request *_req
    cdef const char *_body_ptr
    cdef size_t _body_len
    cdef tf_body *_stream  # the body still arriving (NULL: whole, or detached)
    cdef bint _streamed    # the body was streamed (tf_conn_body)
    cdef int _stream_state  # 0: untouched, 1: stream() began, 2: read to its end
    cdef tf_conn *_conn
    cdef object _method, _path, _raw_path, _query_string, _headers, _body, _remote, _scheme
    cdef object _host
    cdef object _query, _cookies
    cdef int _version_minor, _remote_port
    cdef readonly object worker_id
    # --threads: this request in flight on a runner thread (_worker.pxi)
    cdef tf_job _job
    cdef object _result, _error
    cdef unsigned long _thread
    cdef bint _running
    cdef bint _on_loop     # a native async handler's: its streamed body is awaited (read())

    def __cinit__(self):
        self._req = NULL

    @property
    def method(self):
        cdef const tf_request *req
        if self._method is None:
            req = self._live_req()
            self._method = _method_str(req.method, req.method_len)
        return self._method

    @property
    def raw_path(self):
        """The path as sent, still percent-encoded."""
        cdef const tf_request *req
        if self._raw_path is None:
            # empty only for an absolute-form target without a path: that is "/"
            req = self._live_req()
            self._raw_path = req.path[:req.path_len].decode("latin-1") if req.path_len else "/"
        return self._raw_path

    @property
    def path(self):
        """The path, percent-decoded (UTF-8)."""
        if self._path is None:
            raw = self.raw_path
            if "%" in raw:
                from urllib.parse import unquote
                self._path = unquote(raw, encoding="utf-8", errors="replace")
            else:
                self._path = raw
        return self._path

    @property
    def host(self):
        """The host the request names, port included when sent: an absolute-form
        target's authority ("GET http://h:8080/p"), else the Host field; "" when
        neither (HTTP/1.0). request.headers keep the Host field as sent."""
        if self._host is None:
            self._host = _target_authority(self._live_req())
            if self._host is None:
                self._host = self.headers.get("host", "")
        return self._host

    @property
    def query_string(self):
        cdef const tf_request *req
        if self._query_string is None:
            req = self._live_req()
            self._query_string = req.query[:req.query_len].decode("latin-1")
        return self._query_string

    @property
    def http_version(self):
        return "HTTP/1.1" if self._version_minor == 1 else "HTTP/1.0"

    @property
    def headers(self):
        """Case-insensitive, multi-valued view of the request headers."""
        cdef size_t i
        cdef const tf_header *h
        cdef const tf_request *req
        if self._headers is None:
            req = self._live_req()
            pairs = []
            for i in range(req.num_headers):
                h = &req.headers[i]
                pairs.append((h.name[:h.name_len].decode("latin-1"),
                              h.value[:h.value_len].decode("latin-1")))
            self._headers = Headers(pairs)
        return self._headers

    @property
    def body(self):
        """The whole body as bytes (a streamed one is read to its end first)."""
        if self._body is None:
            if self._streamed:
                self._check_not_on_loop("request.body")
                self._body = self._read_all()
                return self._body
            if self._body_ptr == NULL and self._body_len:
                self._live_req()  # raises: the body was not copied before its buffer was reused
            self._body = PyBytes_FromStringAndSize(self._body_ptr, self._body_len)
        return self._body

    def stream(self, Py_ssize_t size=_STREAM_CHUNK):
        """The body as an iterator of byte chunks of at most size bytes, read from
        the connection as they arrive (a body that came whole: one chunk). Raises
        ClientDisconnected, BodyTimeout (408), PayloadTooLarge (413) or
        BadRequest (400) when the body cannot be read to its end."""
        if size <= 0:
            raise ValueError("size must be positive")
        if not self._streamed or self._body is not None:
            body = self.body
            return iter((body,) if body else ())
        if self._stream_state:
            raise RuntimeError("the request body is already being read")
        self._check_not_on_loop("request.stream()")
        self._stream_state = 1
        return self._chunks(size)

    async def read(self):
        """The whole body as bytes, awaited: in an async handler a streamed body
        (one that did not come with the head) arrives without blocking the event
        loop. Afterwards request.body is the same bytes. Raises as stream()."""
        if self._body is not None or not self._streamed or not self._on_loop:
            return self.body
        return await _read_async(self)

    cdef int _check_not_on_loop(self, str what) except -1:
        if self._on_loop:
            raise RuntimeError(f"{what} would block the event loop while a large request "
                               "body arrives: in an async handler, use "
                               "`body = await request.read()` (request.body is that "
                               "body afterwards)")
        return 0

    def _chunks(self, Py_ssize_t size):
        while True:
            chunk = self._read_chunk(size)
            if not chunk:
                self._stream_state = 2
                return
            yield chunk

    cdef tf_body *_live_stream(self) except NULL:
        if self._stream == NULL:
            raise RuntimeError("a streamed request body can be read only while its handler "
                               "runs (read it before returning)")
        return self._stream

    cdef bytes _read_all(self):
        if self._stream_state:
            raise RuntimeError("the request body was read with stream(); request.body is "
                               "not available after it")
        self._stream_state = 1
        cdef list parts = []
        while True:
            chunk = self._read_chunk(_STREAM_CHUNK)
            if not chunk:
                break
            parts.append(chunk)
        self._stream_state = 2
        return b"".join(parts)

    cdef object _take_now(self, Py_ssize_t n):
        """For a reader on the loop's thread that must not wait (ASGI receive()):
        at most n bytes of the streamed body that are here now, b"" at its end,
        or None when none is here yet: cb->on_body(ctx, job) then follows once
        for this deferred request (bytes, the end, or an error)."""
        cdef tf_body *b = self._live_stream()
        cdef const char *data
        cdef ssize_t got = tf_body_take(b, &data)
        if got == TF_BODY_AGAIN:
            return None
        if got < 0:
            raise _body_error(errno)
        if got > n:
            got = n
        out = PyBytes_FromStringAndSize(data, got)
        tf_body_consume(b, <size_t>got)
        if got == 0:
            self._stream_state = 2
        return out

    cdef bytes _read_chunk(self, Py_ssize_t n):
        """At most n bytes of the streamed body as they arrive; b"" at its end.
        Inline (the loop's thread) the bytes are copied once, from the window;
        on a runner thread the wait and the copy happen without the GIL."""
        cdef tf_body *b = self._live_stream()
        cdef int err = 0
        if self._running:  # on a runner thread (--threads): the request is deferred
            return _read_unlocked(b, n)
        while True:
            chunk = self._take_now(n)
            if chunk is not None:
                return chunk
            if tf_body_wait(b) < 0:  # releases the GIL while it waits
                err = errno
                if err != EINTR:
                    raise _body_error(err)
                PyErr_CheckSignals()  # a handler's exception (--timeout) is raised here

    @property
    def query(self):
        """The query string parsed: QueryParams, multi-valued, blank values kept."""
        if self._query is None:
            from urllib.parse import parse_qsl
            self._query = QueryParams(parse_qsl(self.query_string, keep_blank_values=True))
        return self._query

    @property
    def cookies(self):
        """{name: value} from every Cookie header (the first of a repeated name wins)."""
        cdef dict jar
        if self._cookies is None:
            jar = {}
            for line in self.headers.get_all("cookie"):
                for part in line.split(";"):
                    name, eq, value = part.strip().partition("=")
                    if eq and name and name not in jar:
                        value = value.strip()
                        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
                            value = value[1:len(value) - 1]
                        jar[name] = value
            self._cookies = jar
        return self._cookies

    def json(self):
        """The body parsed as JSON. A body that is not valid JSON (or not UTF-8)
        raises tailfast.BadRequest, which answers 400 when the handler does not
        catch it."""
        if self._body_len == 0 and self._body is None and not self._streamed:
            raise BadRequest("the request has no body; JSON was expected")
        try:
            return _json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the request body is not valid JSON: {exc}") from None

    @property
    def remote_addr(self):
        """The client's address: the peer's, or the one a trusted proxy
        forwarded (--forwarded-allow-ips)."""
        if self._remote is None:
            self._resolve_client()
        return self._remote

    @property
    def scheme(self):
        """"http", or the scheme a trusted proxy forwarded (e.g. "https")."""
        if self._scheme is None:
            self._resolve_client()
        return self._scheme

    cdef _resolve_client(self):
        cdef char host[64]
        cdef int port = 0
        if self._conn == NULL or tf_conn_peer(self._conn, host, sizeof(host), &port) < 0:
            peer = ""
        else:
            peer = host.decode("ascii")
            self._remote_port = port
        if self._req != NULL and not _has_forwarding_headers(self._req):
            # the common case, decided without building the Headers object
            self._remote, self._scheme = peer, "http"
        else:
            self._remote, self._scheme = _proxy.resolve(peer, self)

    @property
    def remote_port(self):
        self.remote_addr
        return self._remote_port

    cdef tf_conn *_live_conn(self) except NULL:
        """The connection to answer on (the WSGI adapter writes through it)."""
        if self._conn == NULL:
            raise RuntimeError("the request has already been answered")
        return self._conn

    cdef const tf_request *_live_req(self) except NULL:
        """The parsed head, while it is still in the connection's buffer."""
        if self._req == NULL:
            raise RuntimeError("this request field was not copied before the connection's "
                               "buffer was reused (the copy failed when the handler returned; "
                               "read the fields a kept request needs inside the handler)")
        return self._req

    cdef int _detach(self) except -1:
        """Copies every field out of the connection's buffer, which is reused next.
        The pointers are dropped even when a copy fails (MemoryError, a timeout
        signal): a field not copied then raises instead of reading reused memory."""
        if self._req == NULL:
            return 0
        try:
            self.method, self.path, self.query_string, self.headers
            if not self._streamed:
                self.body  # a streamed body is never read here: the application did not want it
            self.remote_addr, self.host, self.cookies, self.scheme
        finally:
            self._req = NULL
            self._conn = NULL
            self._body_ptr = NULL
            self._stream = NULL
        return 0

    def __repr__(self):
        return f"<Request {self.method} {self.raw_path}>"
