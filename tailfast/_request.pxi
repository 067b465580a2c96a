# The Request view: a lazy window on the parsed request in the connection's buffer.
# Included by _core.pyx.


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


cdef class Request:
    """One HTTP request. Fields are read from the connection's buffer when first
    used; a Request kept after the handler returns is copied out first."""

    cdef const tf_request *_req
    cdef const char *_body_ptr
    cdef size_t _body_len
    cdef tf_conn *_conn
    cdef object _method, _path, _raw_path, _query_string, _headers, _body, _remote, _scheme
    cdef object _query, _cookies
    cdef int _version_minor, _remote_port
    cdef readonly object worker_id
    # --threads: this request in flight on a runner thread (_worker.pxi)
    cdef tf_job _job
    cdef object _result, _error
    cdef unsigned long _thread
    cdef bint _running

    def __cinit__(self):
        self._req = NULL

    @property
    def method(self):
        if self._method is None:
            self._method = _method_str(self._req.method, self._req.method_len)
        return self._method

    @property
    def raw_path(self):
        """The path as sent, still percent-encoded."""
        if self._raw_path is None:
            self._raw_path = self._req.path[:self._req.path_len].decode("latin-1")
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
    def query_string(self):
        if self._query_string is None:
            self._query_string = self._req.query[:self._req.query_len].decode("latin-1")
        return self._query_string

    @property
    def http_version(self):
        return "HTTP/1.1" if self._version_minor == 1 else "HTTP/1.0"

    @property
    def headers(self):
        """Case-insensitive, multi-valued view of the request headers."""
        cdef size_t i
        cdef const tf_header *h
        if self._headers is None:
            pairs = []
            for i in range(self._req.num_headers):
                h = &self._req.headers[i]
                pairs.append((h.name[:h.name_len].decode("latin-1"),
                              h.value[:h.value_len].decode("latin-1")))
            self._headers = Headers(pairs)
        return self._headers

    @property
    def body(self):
        if self._body is None:
            self._body = PyBytes_FromStringAndSize(self._body_ptr, self._body_len)
        return self._body

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
        if self._body_len == 0 and self._body is None:
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

    cdef void _detach(self):
        """Copies every field out of the connection's buffer, which is reused next."""
        if self._req == NULL:
            return
        self.method, self.path, self.query_string, self.headers, self.body, self.remote_addr
        self.cookies
        self.scheme
        self._req = NULL
        self._conn = NULL
        self._body_ptr = NULL

    def __repr__(self):
        return f"<Request {self.method} {self.raw_path}>"
