# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The one place where Python meets tailfast's C core.

The C supervisor forks the workers; each worker runs the C epoll loop, which
calls back here once per complete request with the GIL held. Request fields
become Python objects only when the handler reads them; the response head is
built in C.
"""

import inspect
import mimetypes
import os
import random
import signal
import stat
import sys
import time
import traceback
from io import BytesIO

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport errno
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp


cdef extern from "<strings.h>" nogil:
    int strncasecmp(const char *a, const char *b, size_t n)

from tailfast._tf cimport (
    TF_EXIT_FATAL,
    TF_LATENCY_BUCKETS,
    TF_LOG_COMBINED,
    TF_LOG_COMMON,
    tf_accesslog_close,
    tf_accesslog_open,
    tf_latency_bounds,
    tf_sb_stats,
    TF_TIMEOUT_SIGNAL,
    TF_W_BUSY,
    tf_conn,
    tf_conn_peer,
    tf_conn_respond,
    tf_conn_respond_end,
    tf_conn_respond_start,
    tf_conn_sendfile,
    tf_conn_write_body,
    tf_header,
    tf_request,
    tf_signals_unblock_all,
    TF_SB_MAX_PROCS,
    TF_SB_MAX_WORKERS,
    tf_sb,
    tf_sb_me,
    tf_sb_proc,
    tf_sb_slot,
    tf_scoreboard,
    tf_scoreboard_close,
    tf_scoreboard_create,
    tf_scoreboard_destroy,
    tf_scoreboard_open,
    tf_supervise,
    tf_supervisor_callbacks,
    tf_supervisor_config,
    tf_worker_callbacks,
    tf_worker_config,
    tf_worker_config_default,
    tf_worker_run,
)

from tailfast import proxy as _proxy
from tailfast.errors import BadRequest, ClientDisconnected, HTTPError, RequestTimeout
from tailfast.headers import Headers, QueryParams

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


# Returned by a handler that answered through Request._respond_whole/_start (WSGI).
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
    never held whole in memory. Its close() is always called."""
    cdef bint complete = False
    cdef bint started = False
    try:
        it = iter(body)
        # the first chunk before the head: an error before any output is still a clean 500
        first = next(it, _END)
        _start(conn, status, pairs, ctype, content_length)
        started = True
        if first is not _END and _write(conn, first):
            for chunk in it:
                if not _write(conn, chunk):
                    break  # the client went away: stop producing
            else:
                complete = True
        elif first is _END:
            complete = True
    finally:
        try:
            if started:
                tf_conn_respond_end(conn, complete)
        finally:
            _close_iterable(body)
    return 0


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
    cdef list ctype = [None]
    cdef bytes body
    cdef int status = 200
    cdef object headers = None
    cdef object explicit_ctype = None
    cdef object value
    cdef tf_header hdr
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
    if isinstance(result, Response):
        value = (<Response>result).body
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
    elif inspect.iscoroutine(result):
        result.close()
        raise ResponseError("the handler returned a coroutine: async def handlers are not supported yet")
    else:
        value = result
    if status < 100 or status > 999:
        raise ResponseError(f"invalid status {status}")
    pairs = _header_pairs(headers)
    if isinstance(result, FileResponse):
        _send_file(conn, <FileResponse>result, pairs)
        return 0
    if _is_stream(value):
        ctype[0] = CT_OCTET
    else:
        body = _encode_body(value, ctype)
    if explicit_ctype is not None:
        ctype[0] = _header_bytes(explicit_ctype, "value")
    if _is_stream(value):
        _stream(conn, status, pairs, ctype[0], value, -1)
        return 0
    _send(conn, status, pairs, ctype[0], body)
    return 0


def validate_headers(headers):
    """[(name bytes, value bytes), ...] from a dict or (name, value) pairs;
    ResponseError for a name that is not a token or a CR, LF or NUL anywhere."""
    return _header_pairs(headers)


# ----------------------------------------------------------------- requests

# header name as sent -> environ key; the common ones interned up front
cdef dict _ENVIRON_KEYS = {b"Content-Type": "CONTENT_TYPE", b"content-type": "CONTENT_TYPE",
                           b"Content-Length": "CONTENT_LENGTH",
                           b"content-length": "CONTENT_LENGTH"}


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

    # -- the response side, for the WSGI adapter (tailfast/wsgi.py) ----------

    cdef tf_conn *_live_conn(self) except NULL:
        if self._conn == NULL:
            raise RuntimeError("the request has already been answered")
        return self._conn

    def _respond_whole(self, int status, list pairs, bytes body):
        """The whole response at once (pairs validated by validate_headers)."""
        _send(self._live_conn(), status, pairs, None, body)

    def _start(self, int status, list pairs, int64_t content_length=-1):
        """Queues the head of a streamed response; content_length -1: unknown."""
        _start(self._live_conn(), status, pairs, None, content_length)

    def _write(self, chunk):
        """Writes body bytes; False once the client is gone."""
        return _write(self._live_conn(), chunk)

    def _sendfile(self, int fd, int64_t offset, int64_t count):
        """Sends count bytes of fd from offset (sendfile); False on failure."""
        return tf_conn_sendfile(self._live_conn(), fd, offset, count) == 0

    def _end(self, bint complete=True):
        """Ends a streamed response; False when it could not be completed."""
        return tf_conn_respond_end(self._live_conn(), complete) == 0

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


# ---------------------------------------------------------- the worker loop

cdef object _handler = None


cdef void _release_gil(void *ctx) noexcept:
    global _saved_thread
    _saved_thread = PyEval_SaveThread()


cdef void _acquire_gil(void *ctx) noexcept:
    global _saved_thread
    PyEval_RestoreThread(_saved_thread)
    _saved_thread = NULL


cdef void _log(str line, bint with_traceback=False) noexcept:
    """Writes "tailfast: <line>" (and the exception being handled) to stderr;
    called from C callbacks, so it never raises."""
    try:
        text = f"tailfast: {line}\n"
        if with_traceback:
            text += traceback.format_exc()
        sys.stderr.write(text)
        sys.stderr.flush()
    except BaseException:
        pass


cdef str _describe(Request request):
    try:
        return f"{request.method} {request.raw_path}"
    except BaseException:
        return "a request"


cdef void _log_handler_error(Request request) noexcept:
    _log(f"worker {_worker_id}: error in handler for {_describe(request)}", True)


cdef void _answer_http_error(tf_conn *conn, Request request, object exc) noexcept:
    if _answered:
        _log_handler_error(request)  # too late for another status
        return
    try:
        status = exc.status if type(exc.status) is int and 400 <= exc.status <= 599 else 500
        message = str(exc) or "error"
        _send(conn, status, [], CT_TEXT, f"{status} {message}\n".encode("utf-8", "replace"))
    except BaseException:
        _log_handler_error(request)


cdef double _timeout = 0.0   # --timeout in this worker (0: none)


def _on_timeout_signal(signum, frame):
    """TF_TIMEOUT_SIGNAL from the primary: the request in progress ran past
    --timeout. Python runs this at the next bytecode boundary of the main
    thread (or when an interrupted sleep or read returns), never inside C
    code, so raising here is safe. A signal that arrives late (the request is
    over, another one started) finds a younger request and is ignored."""
    cdef tf_sb_proc *me = tf_sb_me
    if me == NULL or _timeout <= 0 or me.state != TF_W_BUSY:
        return
    elapsed = time.monotonic() - me.request_started
    if elapsed >= _timeout:
        raise RequestTimeout(f"the request ran for {elapsed:.2f} s, past --timeout {_timeout:g} s")


cdef bytes BODY_503 = b"503 Service Unavailable: the request timed out\n"


cdef void _answer_timeout(tf_conn *conn, Request request) noexcept:
    """Logs the timed-out request (method, path, duration) and answers 503."""
    if _answered:
        _log_handler_error(request)  # a streamed answer is under way: it is cut instead
        return
    elapsed = (time.monotonic() - tf_sb_me.request_started) if tf_sb_me != NULL else _timeout
    _log(f"worker {_worker_id} (pid {os.getpid()}): {_describe(request)} timed out "
         f"after {elapsed:.2f} s (timeout {_timeout:g} s); answered 503")
    try:
        _send(conn, 503, [], CT_TEXT, BODY_503)
    except BaseException:
        pass  # nothing sent: the C loop answers 500


cdef int _on_request(void *ctx, tf_conn *conn, const tf_request *req,
                     const char *body, size_t body_len) noexcept:
    cdef Request request = Request.__new__(Request)
    request._req = req
    request._conn = conn
    request._body_ptr = body
    request._body_len = body_len
    request._version_minor = req.version_minor
    request.worker_id = _worker_id
    global _answered
    _answered = False
    try:
        _respond(conn, _handler(request))
    except RequestTimeout:
        # raised before the response was handed to C: nothing was sent yet
        _answer_timeout(conn, request)
    except HTTPError as exc:
        _answer_http_error(conn, request, exc)
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


cdef bytes CT_METRICS = b"text/plain; version=0.0.4; charset=utf-8"


cdef int _on_metrics(void *ctx, tf_conn *conn) noexcept:
    """GET --metrics-path: the scoreboard in the Prometheus text format."""
    try:
        from tailfast.metrics import render
        _send(conn, 200, [(b"Cache-Control", b"no-store")], CT_METRICS,
              render(scoreboard_snapshot()).encode("utf-8"))
    except BaseException:
        _log(f"worker {_worker_id}: error in the metrics endpoint", True)
    return 0


cdef bytes _path_setting(dict settings, str name):
    return (settings.get(name) or "").encode("utf-8")


cdef int _run_http_worker(int worker_id, dict settings) except -1:
    cdef tf_worker_config cfg
    cdef tf_worker_callbacks cb
    tf_worker_config_default(&cfg)
    # kept alive by these locals for as long as the loop runs
    cdef bytes health_path = _path_setting(settings, "health_path")
    cdef bytes ready_path = _path_setting(settings, "ready_path")
    cdef bytes metrics_path = _path_setting(settings, "metrics_path")
    cdef bytes access_log = os.fsencode(settings.get("access_log") or "")
    cfg.health_path = <const char *>health_path if health_path else NULL
    cfg.ready_path = <const char *>ready_path if ready_path else NULL
    cfg.metrics_path = <const char *>metrics_path if metrics_path else NULL
    cfg.listen_fd = settings["listen_fd"]
    cfg.worker_id = worker_id
    cfg.max_connections = settings["max_connections"]
    cfg.keepalive_timeout = settings["keepalive_timeout"]
    cfg.header_timeout = settings["header_timeout"]
    cfg.body_timeout = settings["body_timeout"]
    cfg.request_timeout = settings["request_timeout"]
    cfg.max_body_size = settings["limit_request_body"]
    cdef long max_requests = settings.get("max_requests", 0)
    cdef long jitter = settings.get("max_requests_jitter", 0)
    if max_requests > 0:
        # jitter spreads the recycling of workers that started together
        cfg.max_requests = max_requests + (random.randint(0, jitter) if jitter > 0 else 0)
    cfg.balance = 1 if settings.get("balance", "shared") == "shared" else 0
    if settings.get("listen_fd_override") is not None:
        cfg.listen_fd = settings["listen_fd_override"]
    cfg.limits.max_request_line = settings["limit_request_line"]
    cfg.limits.max_header_count = settings["limit_request_fields"]
    cfg.limits.max_header_field = settings["limit_request_field_size"]
    global _timeout
    _timeout = settings.get("timeout", 0.0)
    if _timeout > 0:
        signal.signal(TF_TIMEOUT_SIGNAL, _on_timeout_signal)
    cb.release = _release_gil
    cb.acquire = _acquire_gil
    cb.on_request = _on_request
    cb.on_metrics = _on_metrics
    cb.ctx = NULL
    log_format = TF_LOG_COMMON if settings.get("access_log_format") == "common" else TF_LOG_COMBINED
    if tf_accesslog_open(access_log, log_format) < 0:
        raise OSError(errno, f"cannot open the access log {settings.get('access_log')!r}: "
                             f"{os.strerror(errno)}")
    try:
        return tf_worker_run(&cfg, &cb)
    finally:
        tf_accesslog_close()


# ----------------------------------------------------------- the supervisor

cdef object _child_target = None   # run(worker_id) -> exit status, in each worker


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
        result = _child_target(worker_id)
        status = result if type(result) is int else 0
    except SystemExit as exc:
        code = exc.code
        status = code if type(code) is int else (0 if code is None else 1)
    except BaseException:
        _log(f"worker {worker_id}: uncaught exception", True)
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    return status


cdef int _supervise(int workers, double graceful_timeout, int http, int listen_fd=-1,
                    long long max_rss=0, dict settings=None) except -1:
    cdef tf_supervisor_config cfg
    cdef tf_supervisor_callbacks cb
    settings = settings or {}
    cdef bytes notify = os.fsencode(settings["notify_socket"]) if settings.get("notify_socket") else None
    cfg.workers = workers
    cfg.graceful_timeout = graceful_timeout
    cfg.http = http
    cfg.listen_fd = listen_fd
    cfg.max_rss = max_rss
    cfg.boot_timeout = 60.0
    cfg.timeout = settings.get("timeout", 0.0)
    cfg.timeout_grace = settings.get("timeout_grace", 5.0)
    cfg.shutdown_delay = settings.get("shutdown_delay", 0.0)
    cfg.stop_filter = 1 if settings.get("stop_filter") else 0
    cfg.notify_socket = <const char *>notify if notify is not None else NULL
    cb.release = _release_gil
    cb.acquire = _acquire_gil
    cb.before_fork = _before_fork
    cb.after_fork_parent = _after_fork_parent
    cb.child_main = _child_main
    cb.ctx = NULL
    return tf_supervise(&cfg, &cb)


def worker_generation():
    """The code generation this worker was forked for: 0 until the first
    SIGHUP, None in the primary."""
    if tf_sb_me == NULL:
        return None
    return tf_sb_me.generation


def run_primary(handler, dict settings, on_worker_start=None, reload=None, worker_setup=None,
                on_worker_exit=None, bint preload=True):
    """Forks settings["workers"] HTTP workers serving handler and supervises
    them until stopped. Returns the primary's exit status.

    reload() -> (handler, on_worker_start, on_worker_exit) imports the
    application as it is on disk now; a worker calls it when it was forked
    after a SIGHUP, or always without preload (handler is then None).
    on_worker_start(worker_id) runs in each worker before it accepts, and
    on_worker_exit(worker_id) after it stopped serving. worker_setup(worker_id)
    -> fd or None runs in each worker first (e.g. its own SO_REUSEPORT socket).
    settings["scoreboard_path"] names the scoreboard file (None: anonymous)."""
    global _handler, _child_target
    _handler = handler

    def http_worker(int worker_id):
        global _handler
        start_hook, exit_hook = on_worker_start, on_worker_exit
        first_load = not preload and (tf_sb_me == NULL or tf_sb_me.generation == 0)
        if reload is not None and (not preload or (tf_sb_me != NULL and tf_sb_me.generation > 0)):
            try:
                _handler, start_hook, exit_hook = reload()
            except BaseException as exc:
                if first_load:
                    # nothing else can serve this code: the primary stops
                    _log(f"worker {worker_id}: {exc}")
                    return TF_EXIT_FATAL
                _log(f"worker {worker_id} (pid {os.getpid()}): cannot load the application; "
                     "the old workers keep serving", True)
                return 1
        if start_hook is not None:
            try:
                start_hook(worker_id)
            except BaseException:
                _log(f"worker {worker_id} (pid {os.getpid()}): on-worker-start hook failed", True)
                return 1
        worker_settings = settings
        if worker_setup is not None:
            fd = worker_setup(worker_id)
            if fd is not None:
                worker_settings = dict(settings, listen_fd_override=fd)
        status = _run_http_worker(worker_id, worker_settings)
        if exit_hook is not None:
            try:
                exit_hook(worker_id)
            except BaseException:
                _log(f"worker {worker_id} (pid {os.getpid()}): on-worker-exit hook failed", True)
        return status

    _child_target = http_worker
    path = settings.get("scoreboard_path")
    cdef bytes path_b = os.fsencode(path) if path else None
    cdef bytes listen_b = str(settings.get("listen_url", "")).encode("utf-8", "replace")
    if tf_scoreboard_create(<const char *>path_b if path_b is not None else NULL,
                            settings["workers"], listen_b) < 0:
        raise OSError(errno, f"cannot create the scoreboard {path!r}: {os.strerror(errno)}")
    try:
        return _supervise(settings["workers"], settings["graceful_timeout"], 1,
                          settings.get("queue_fd", -1), settings.get("max_rss", 0), settings)
    finally:
        # only the primary gets here: workers leave through _exit
        tf_scoreboard_destroy(<const char *>path_b if path_b is not None else NULL)


_PROC_STATES = {1: "starting", 2: "idle", 3: "busy", 4: "draining"}
_SLOT_STATES = {0: "unused", 1: "running", 2: "backoff"}


cdef str _cstr(const char *text):
    return (<bytes>text).decode("utf-8", "replace")


cdef dict _stats(const tf_sb_stats *st):
    cdef int i
    return {
        "status": [st.status[i] for i in range(5)],
        "latency": [st.latency[i] for i in range(TF_LATENCY_BUCKETS)],
        "latency_sum": st.latency_sum,
    }


_CAUSES = ("crash", "rolling_restart", "max_requests", "max_rss")


cdef dict _snapshot(const tf_scoreboard *sb):
    """The scoreboard sb as plain Python values."""
    cdef int i
    cdef const tf_sb_proc *p
    cdef const tf_sb_slot *sl
    cdef double mono = time.monotonic()
    cdef double wall = time.time()
    procs = []
    hw = min(sb.procs_hw, TF_SB_MAX_PROCS)
    for i in range(hw):
        p = &sb.procs[i]
        if p.state == 0 or p.pid <= 0:
            continue
        busy = p.state == 3
        procs.append({
            "worker_id": p.worker_id,
            "pid": p.pid,
            "state": _PROC_STATES.get(p.state, "unknown"),
            "ready": p.state in (2, 3),
            "generation": p.generation,
            "requests": p.requests,
            "accepted": p.accepted,
            "open": p.open,
            "uptime": round(wall - p.started, 3) if p.started > 0 else 0.0,
            "heartbeat_age": round(mono - p.heartbeat, 3) if p.heartbeat > 0 else None,
            "request": (f"{_cstr(p.method)} {_cstr(p.path)}"
                        if busy else None),
            "request_age": round(mono - p.request_started, 3) if busy else None,
            "rss": p.rss,
            "retire": bool(p.retire),
            "stats": _stats(&p.stats),
        })
    slots = []
    retired = []
    for i in range(1, TF_SB_MAX_WORKERS + 1):
        sl = &sb.slots[i]
        if i <= min(sb.workers, TF_SB_MAX_WORKERS):
            slots.append({
                "worker_id": i,
                "state": _SLOT_STATES.get(sl.state, "unknown"),
                "pid": sl.pid,
                "restarts": sl.restarts,
                "crashes": sl.crashes,
                "next_attempt_in": (round(max(0.0, sl.next_attempt - wall), 3)
                                    if sl.state == 2 else None),
            })
        if sl.retired_requests or any([sl.retired.status[k] for k in range(5)]):
            # exited processes of this id (also ids above the current count)
            retired.append({"worker_id": i, "requests": sl.retired_requests,
                            "stats": _stats(&sl.retired)})
    return {
        "primary_pid": sb.primary_pid,
        "listen": _cstr(sb.listen),
        "workers": sb.workers,
        "generation": sb.generation,
        "uptime": round(wall - sb.started, 3),
        "queue_depth": sb.queue_depth,
        "queue_max": sb.queue_max,
        "stopping": bool(sb.stopping),
        "restarts_by_cause": {_CAUSES[i]: sb.restarts_by_cause[i] for i in range(4)},
        "latency_bounds": [tf_latency_bounds[i] for i in range(TF_LATENCY_BUCKETS - 1)],
        "slots": slots,
        "processes": procs,
        "retired": retired,
    }


def read_scoreboard(path):
    """A snapshot of the scoreboard file at path, as plain Python values."""
    cdef bytes path_b = os.fsencode(path)
    cdef const tf_scoreboard *sb = tf_scoreboard_open(path_b)
    if sb == NULL:
        raise OSError(f"cannot read the scoreboard {path}")
    try:
        return _snapshot(sb)
    finally:
        tf_scoreboard_close(sb)


def scoreboard_snapshot():
    """A snapshot of this process tree's own scoreboard (in the primary or a worker)."""
    if tf_sb == NULL:
        raise RuntimeError("no scoreboard: not running under the tailfast supervisor")
    return _snapshot(tf_sb)


def spawn_workers(int n, target, double graceful_timeout=30.0):
    """The cluster manager without HTTP: forks n workers running
    target(worker_id), respawns those that die, and returns the exit status
    once stopped by SIGTERM/SIGINT/SIGQUIT."""
    global _child_target
    if not callable(target):
        raise TypeError("target must be callable")
    if n < 1:
        raise ValueError("n must be at least 1")

    def run_target(int worker_id):
        tf_signals_unblock_all()
        result = target(worker_id)
        return result if type(result) is int else 0

    _child_target = run_target
    return _supervise(n, graceful_timeout, 0)


FATAL_EXIT_STATUS = TF_EXIT_FATAL


include "_wsgi.pxi"
include "_loadgen.pxi"
include "_parsebench.pxi"
