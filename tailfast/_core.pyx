# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The one place where Python meets tailfast's C core.

The C supervisor forks the workers; each worker runs the C epoll loop, which
calls back here once per complete request with the GIL held. Request fields
become Python objects only when the handler reads them; the response head is
built in C.
"""

import sys
import traceback

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp

from tailfast._tf cimport (
    TF_EXIT_FATAL,
    tf_conn,
    tf_conn_peer,
    tf_conn_respond,
    tf_header,
    tf_request,
    tf_signals_unblock_all,
    tf_supervise,
    tf_supervisor_callbacks,
    tf_supervisor_config,
    tf_worker_callbacks,
    tf_worker_config,
    tf_worker_config_default,
    tf_worker_run,
)

from tailfast.headers import Headers

try:
    import orjson as _orjson
except ImportError:  # optional: the stdlib does the same, slower
    _orjson = None
import json as _json


cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyEval_SaveThread()
    void PyEval_RestoreThread(PyThreadState *state)
    void PyOS_BeforeFork()
    void PyOS_AfterFork_Parent()
    void PyOS_AfterFork_Child()
    Py_ssize_t Py_REFCNT(object o)


# ------------------------------------------------------------------- state

cdef object _worker_id = None      # 1..N in a worker, None in the primary
cdef PyThreadState *_saved_thread = NULL


def get_worker_id():
    """The worker's id (1..N) in a worker process, None in the primary."""
    return _worker_id


def is_primary():
    """True unless this process is a tailfast worker."""
    return _worker_id is None


# --------------------------------------------------------------- responses

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
    if b"\r" in raw or b"\n" in raw or b"\0" in raw:
        raise ResponseError(f"header {what} {text!r} contains CR, LF or NUL")
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


cdef int _send(tf_conn *conn, int status, list pairs, object ctype, bytes body) except -1:
    """Writes the response through C: head built there, one writev."""
    cdef Py_ssize_t n = len(pairs) + 1
    cdef tf_header *hdrs = <tf_header *>malloc(n * sizeof(tf_header))
    cdef Py_ssize_t i = 0
    cdef int close_after = 0
    cdef bint has_ctype = False
    cdef bytes name, value
    if hdrs == NULL:
        raise MemoryError()
    try:
        for name, value in pairs:
            lowered = name.lower()
            if lowered in (b"content-length", b"transfer-encoding", b"date"):
                continue
            if lowered == b"connection":
                if b"close" in value.lower():
                    close_after = 1
                continue
            if lowered == b"content-type":
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
        if tf_conn_respond(conn, status, hdrs, i, PyBytes_AS_STRING(body),
                           PyBytes_GET_SIZE(body), close_after) < 0:
            raise ResponseError("response head too large")
    finally:
        free(hdrs)
    return 0


cdef int _respond(tf_conn *conn, object result) except -1:
    """Turns a handler's return value into a response and sends it."""
    cdef list ctype = [None]
    cdef bytes body
    cdef int status = 200
    cdef object headers = None
    cdef object explicit_ctype = None
    cdef tf_header hdr

    # fast path: the most common answer, a bytes body
    if type(result) is bytes:
        hdr.name = PyBytes_AS_STRING(H_CONTENT_TYPE)
        hdr.name_len = PyBytes_GET_SIZE(H_CONTENT_TYPE)
        hdr.value = PyBytes_AS_STRING(CT_OCTET)
        hdr.value_len = PyBytes_GET_SIZE(CT_OCTET)
        tf_conn_respond(conn, 200, &hdr, 1, PyBytes_AS_STRING(<bytes>result),
                        PyBytes_GET_SIZE(<bytes>result), 0)
        return 0

    if result is None:
        _send(conn, 204, [], None, b"")
        return 0
    if isinstance(result, Response):
        body = _encode_body((<Response>result).body, ctype)
        status = (<Response>result).status
        headers = (<Response>result).headers
        explicit_ctype = (<Response>result).content_type
    elif type(result) is tuple:
        if len(result) == 2:
            value, status_obj = result
        elif len(result) == 3:
            value, status_obj, headers = result
        else:
            raise ResponseError(f"a returned tuple must be (body, status) or (body, status, headers), got {len(result)} items")
        if type(status_obj) is not int:
            raise ResponseError(f"status must be an int, got {status_obj!r}")
        status = status_obj
        body = _encode_body(value, ctype)
    else:
        body = _encode_body(result, ctype)
    if status < 100 or status > 999:
        raise ResponseError(f"invalid status {status}")
    if explicit_ctype is not None:
        ctype[0] = _header_bytes(explicit_ctype, "value")
    _send(conn, status, _header_pairs(headers), ctype[0], body)
    return 0


# ----------------------------------------------------------------- requests

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
    cdef object _method, _path, _raw_path, _query_string, _headers, _body, _remote
    cdef int _version_minor
    cdef readonly object worker_id

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

    def json(self):
        """The body parsed as JSON."""
        return _json.loads(self.body)

    @property
    def remote_addr(self):
        cdef char host[64]
        cdef int port = 0
        if self._remote is None:
            if self._conn == NULL or tf_conn_peer(self._conn, host, sizeof(host), &port) < 0:
                self._remote = ""
            else:
                self._remote = host.decode("ascii")
        return self._remote

    cdef void _detach(self):
        """Copies every field out of the connection's buffer, which is reused next."""
        if self._req == NULL:
            return
        self.method, self.path, self.query_string, self.headers, self.body, self.remote_addr
        self._req = NULL
        self._conn = NULL
        self._body_ptr = NULL

    def __repr__(self):
        return f"<Request {self.method} {self.raw_path}>"


# ---------------------------------------------------------- the worker loop

cdef object _handler = None


cdef void _release_gil(void *ctx) noexcept:
    global _saved_thread
    _saved_thread = PyEval_SaveThread()


cdef void _acquire_gil(void *ctx) noexcept:
    global _saved_thread
    PyEval_RestoreThread(_saved_thread)
    _saved_thread = NULL


cdef void _log_handler_error(Request request) noexcept:
    try:
        try:
            what = f"{request.method} {request.raw_path}"
        except BaseException:
            what = "a request"
        sys.stderr.write(f"tailfast: worker {_worker_id}: error in handler for {what}\n"
                         + traceback.format_exc())
        sys.stderr.flush()
    except BaseException:
        pass


cdef int _on_request(void *ctx, tf_conn *conn, const tf_request *req,
                     const char *body, size_t body_len) noexcept:
    cdef Request request = Request.__new__(Request)
    request._req = req
    request._conn = conn
    request._body_ptr = body
    request._body_len = body_len
    request._version_minor = req.version_minor
    request.worker_id = _worker_id
    try:
        _respond(conn, _handler(request))
    except BaseException:
        _log_handler_error(request)
        # the C loop answers 500 when nothing was sent; a half-sent answer closes
    if Py_REFCNT(request) > 1:
        # the handler kept the request: it must not point into a reused buffer
        try:
            request._detach()
        except BaseException:
            pass
    return 0


cdef int _run_http_worker(int worker_id, dict settings) except -1:
    cdef tf_worker_config cfg
    cdef tf_worker_callbacks cb
    tf_worker_config_default(&cfg)
    cfg.listen_fd = settings["listen_fd"]
    cfg.worker_id = worker_id
    cfg.max_connections = settings["max_connections"]
    cfg.keepalive_timeout = settings["keepalive_timeout"]
    cfg.request_timeout = settings["request_timeout"]
    cfg.max_body_size = settings["limit_request_body"]
    cb.release = _release_gil
    cb.acquire = _acquire_gil
    cb.on_request = _on_request
    cb.ctx = NULL
    return tf_worker_run(&cfg, &cb)


# ----------------------------------------------------------- the supervisor

cdef object _child_target = None   # run(worker_id) -> exit status, in each worker
cdef object _on_worker_start = None


cdef void _before_fork(void *ctx) noexcept:
    # flushed now, buffered output is not written twice by the children
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    PyOS_BeforeFork()


cdef void _after_fork_parent(void *ctx) noexcept:
    PyOS_AfterFork_Parent()


cdef int _child_main(void *ctx, int worker_id) noexcept:
    global _worker_id
    PyOS_AfterFork_Child()
    _worker_id = worker_id
    cdef int status = 0
    try:
        if _on_worker_start is not None:
            _on_worker_start(worker_id)
        result = _child_target(worker_id)
        status = result if type(result) is int else 0
    except SystemExit as exc:
        code = exc.code
        status = code if type(code) is int else (0 if code is None else 1)
    except BaseException:
        try:
            sys.stderr.write(f"tailfast: worker {worker_id}: uncaught exception\n"
                             + traceback.format_exc())
        except BaseException:
            pass
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    return status


cdef int _supervise(int workers, double graceful_timeout, int http) except -1:
    cdef tf_supervisor_config cfg
    cdef tf_supervisor_callbacks cb
    cfg.workers = workers
    cfg.graceful_timeout = graceful_timeout
    cfg.http = http
    cb.release = _release_gil
    cb.acquire = _acquire_gil
    cb.before_fork = _before_fork
    cb.after_fork_parent = _after_fork_parent
    cb.child_main = _child_main
    cb.ctx = NULL
    return tf_supervise(&cfg, &cb)


def run_primary(handler, dict settings, on_worker_start=None):
    """Forks settings["workers"] HTTP workers serving handler and supervises
    them until stopped. Returns the primary's exit status."""
    global _handler, _child_target, _on_worker_start
    _handler = handler
    _on_worker_start = on_worker_start

    def http_worker(int worker_id):
        return _run_http_worker(worker_id, settings)

    _child_target = http_worker
    return _supervise(settings["workers"], settings["graceful_timeout"], 1)


def spawn_workers(int n, target, double graceful_timeout=30.0):
    """The cluster manager without HTTP: forks n workers running
    target(worker_id), respawns those that die, and returns the exit status
    once stopped by SIGTERM/SIGINT/SIGQUIT."""
    global _child_target, _on_worker_start
    if not callable(target):
        raise TypeError("target must be callable")
    if n < 1:
        raise ValueError("n must be at least 1")
    _on_worker_start = None

    def run_target(int worker_id):
        tf_signals_unblock_all()
        result = target(worker_id)
        return result if type(result) is int else 0

    _child_target = run_target
    return _supervise(n, graceful_timeout, 0)


FATAL_EXIT_STATUS = TF_EXIT_FATAL
include "_loadgen.pxi"
