# WSGI (PEP 3333) in Cython: the environ comes from the parsed head, and the
# response goes to the C writer — one writev for a body of known length,
# chunked (HTTP/1.1) or close-delimited (HTTP/1.0) streaming otherwise,
# sendfile(2) for wsgi.file_wrapper. Included by _core.pyx.

from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memchr


# header name as sent -> environ key; the common ones interned up front
cdef dict _ENVIRON_KEYS = {b"Content-Type": "CONTENT_TYPE", b"content-type": "CONTENT_TYPE",
                           b"Content-Length": "CONTENT_LENGTH",
                           b"content-length": "CONTENT_LENGTH"}


class FileWrapper:
    """wsgi.file_wrapper: returned by an application, the server sends the file
    with sendfile(2) when it is a regular file; otherwise it is iterated."""

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        while True:
            block = self.filelike.read(self.blksize)
            if not block:
                return
            yield block

    def close(self):
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


cdef class _EmptyInput:
    """wsgi.input of a request without a body: shared, as nothing can change it."""

    def read(self, size=-1):
        return b""

    def readline(self, size=-1):
        return b""

    def readlines(self, hint=-1):
        return []

    def __iter__(self):
        return iter(())


cdef _EmptyInput _EMPTY_INPUT = _EmptyInput()


cdef class _BodyInput:
    """wsgi.input of a streamed body: reads from the connection as the body
    arrives (the worker holds at most a window of it). read(n) returns n bytes
    unless the body ends first. A client that goes away mid-body makes a read
    raise ClientDisconnected (an OSError), not return short; a stalled one
    BodyTimeout (408) after --body-timeout."""

    cdef Request request
    cdef bytes _buf      # bytes read but not returned yet, from _pos
    cdef Py_ssize_t _pos
    cdef bint _eof

    cdef bytes _more(self, Py_ssize_t n):
        if self._eof:
            return b""
        chunk = self.request._read_chunk(n)
        if not chunk:
            self._eof = True
        return chunk

    cdef bytes _rest(self):
        rest = self._buf[self._pos:] if self._pos else self._buf
        self._buf = b""
        self._pos = 0
        return rest

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self._rest()]
            while True:
                chunk = self._more(_STREAM_CHUNK)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        cdef Py_ssize_t want = size, have = len(self._buf) - self._pos, total = 0
        cdef list out = []
        if have:
            if have >= want:
                self._pos += want
                return self._buf[self._pos - want:self._pos]
            out.append(self._rest())
            total = have
        while total < want:
            chunk = self._more(want - total)
            if not chunk:
                break
            out.append(chunk)
            total += len(chunk)
        return b"".join(out)

    def readline(self, size=-1):
        cdef Py_ssize_t limit = -1 if size is None or size < 0 else size
        cdef Py_ssize_t total = 0, end, stop
        cdef list parts = []
        while limit < 0 or total < limit:
            if self._pos < len(self._buf):
                end = self._buf.find(b"\n", self._pos)
                stop = len(self._buf) if end < 0 else end + 1
                if limit >= 0 and stop - self._pos > limit - total:
                    stop = self._pos + (limit - total)
                    end = -1
                parts.append(self._buf[self._pos:stop])
                total += stop - self._pos
                self._pos = stop
                if end >= 0:
                    break
                continue
            chunk = self._more(_STREAM_CHUNK)
            if not chunk:
                break
            self._buf = chunk
            self._pos = 0
        return b"".join(parts)

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

# validated response headers: (name, value) as given -> ((name bytes, value bytes),
# Content-Length as int or -1); most applications send the same few again and again
cdef dict _HEADER_CACHE = {}
cdef Py_ssize_t _HEADER_CACHE_MAX = 512


cdef tuple _checked_header(object item):
    if type(item) is not tuple or len(<tuple>item) != 2:
        raise TypeError(f"each header must be a (name, value) tuple, got {item!r}")
    name, value = <tuple>item
    if type(name) is not str or type(value) is not str:
        raise TypeError(f"header names and values must be str, got {item!r}")
    cached = _HEADER_CACHE.get(item)
    if cached is not None:
        return <tuple>cached
    cdef bytes name_b = _header_bytes(name, "name")
    if not name_b or name_b.strip(_TCHARS):
        raise ResponseError(f"header name {name!r} is not a token")
    cdef bytes value_b = _header_bytes(value, "value")
    cdef long long length = -1
    if name_b.lower() == b"content-length":
        text = value_b.strip()
        if not text.isdigit() or len(text) > 18:
            raise ValueError(f"invalid Content-Length {value!r}")
        length = int(text)
    result = ((name_b, value_b), length)
    if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
        _HEADER_CACHE.clear()
    _HEADER_CACHE[item] = result
    return result


cdef int _parse_status(object status) except -1:
    """The code of a WSGI status line such as '200 OK'."""
    cdef str text
    cdef Py_ssize_t i, n
    if type(status) is str:
        text = <str>status
        n = len(text)
        # 2xx-9xx: a 1xx is interim, never the final answer (RFC 9110 15.2)
        if (n >= 4 and text[3] == " " and "2" <= text[0] <= "9" and "0" <= text[1] <= "9"
                and "0" <= text[2] <= "9"):
            for i in range(4, n):
                if text[i] == "\r" or text[i] == "\n":
                    break
            else:
                return (ord(text[0]) - 48) * 100 + (ord(text[1]) - 48) * 10 + ord(text[2]) - 48
    raise ValueError(f"invalid WSGI status {status!r}: expected a final status such as '200 OK'")


DEF _HANDED = 2  # _Exchange.finish: the rest of the body is pulled by the loop


cdef class _Exchange:
    """One request's start_response / write() state."""

    cdef Request request
    cdef int status
    cdef list pairs
    cdef long long length  # the application's Content-Length, -1 when it gave none
    cdef bint sent
    cdef bint complete
    cdef object result  # --threads: what the application returned, sent by the loop
    cdef list early     # --threads: bytes given to write() on a runner, sent by the loop

    def start_response(self, status, headers, exc_info=None):
        cdef list pairs = []
        cdef long long length = -1
        cdef tuple checked
        if exc_info is not None:
            try:
                if self.sent:
                    # PEP 3333: too late to change the answer; the error goes on up
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status:
            raise AssertionError("start_response called a second time without exc_info")
        code = _parse_status(status)
        if type(headers) is not list:
            raise TypeError(f"headers must be a list, got {type(headers).__name__}")
        for item in <list>headers:
            checked = _checked_header(item)
            pairs.append(checked[0])
            if <long long>checked[1] >= 0:
                length = checked[1]
        self.status = code
        self.pairs = pairs
        self.length = length
        return self.write

    cdef int _send_head(self) except -1:
        if not self.status:
            raise AssertionError("the application wrote a body before calling start_response")
        _start(self.request._live_conn(), self.status, self.pairs, None, self.length)
        self.sent = True
        return 0

    def write(self, data):
        """The PEP's write() callable: the bytes go out before it returns."""
        if type(data) is not bytes:
            raise TypeError(f"write() takes bytes, got {type(data).__name__}")
        if self.early is not None:
            self.early.append(data)  # on a runner: the loop writes it, first
            return
        if not self.sent:
            self._send_head()
        if not _write(self.request._live_conn(), data):
            self.complete = False
            raise ClientDisconnected("the client went away")

    cdef int finish(self, object result) except -1:
        """Sends what the application returned, then ends the response; returns
        _HANDED when the loop goes on with an iterable (and closes it)."""
        cdef tf_conn *conn = self.request._live_conn()
        cdef bytes body
        if not self.sent:
            if type(result) is list and len(<list>result) == 1 and type((<list>result)[0]) is bytes:
                body = (<list>result)[0]
                if self.length < 0 or self.length == len(body):
                    # the common case: the whole answer in one writev
                    if not self.status:
                        raise AssertionError("the application did not call start_response")
                    _send(conn, self.status, self.pairs, None, body)
                    self.sent = True
                    return 0
            elif type(result) is FileWrapper and self.status:
                span = _file_span(result)
                if span is not None:
                    fd, offset, size = span
                    count = size if self.length < 0 else min(size, self.length)
                    _start(conn, self.status, self.pairs, None,
                           count if self.length < 0 else self.length)
                    self.sent = True
                    tf_conn_sendfile(conn, fd, offset, count)
                    tf_conn_respond_end(conn, 1)
                    return 0
        try:
            it = iter(result)
            for chunk in it:
                if type(chunk) is not bytes:
                    raise TypeError(f"the application yielded {type(chunk).__name__}, not bytes")
                if not chunk:
                    continue  # PEP 3333: the head waits for the first non-empty chunk
                if not self.sent:
                    self._send_head()
                if type(result) is not list:
                    # this chunk and the rest are pulled by the loop as the client
                    # reads; it closes result
                    _pull_from(conn, chunk, it, result, True)
                    return _HANDED
                if not _write(conn, chunk):
                    self.complete = False
                    break  # the client went away: stop iterating
            if not self.sent:
                self._send_head()  # an empty body
        except BaseException:
            if self.sent:
                tf_conn_respond_end(conn, 0)  # the head is out: cut the connection
            raise
        tf_conn_respond_end(conn, self.complete)
        return 0

    cdef int answer(self) except -1:
        """--threads, on the loop: sends what _run_app kept, then closes it."""
        result, self.result = self.result, None
        early, self.early = self.early, None
        if early:
            result = _EarlyThen(early, result)  # write()'s bytes go first
        cdef int sent = 0
        try:
            sent = self.finish(result)
        except ClientDisconnected:
            pass
        finally:
            if sent != _HANDED and type(result) is not list:
                _close_iterable(result)
        return 0

    cdef int discard(self) except -1:
        """--threads, on the loop: the client is gone; closes the result."""
        result, self.result = self.result, None
        if type(result) is not list and result is not ANSWERED:
            _close_iterable(result)
        return 0


class _EarlyThen:
    """The bytes an application gave to write() on a runner, then its iterable.
    close() is the application's (PEP 3333)."""

    def __init__(self, early: list, rest: object) -> None:
        self.early = early
        self.rest = rest

    def __iter__(self):
        yield from self.early
        yield from self.rest

    def close(self) -> None:
        _close_iterable(self.rest)


def _file_span(wrapper):
    """(fd, offset, size from offset) when the wrapped file can be sent with sendfile."""
    try:
        fd = wrapper.filelike.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        offset = wrapper.filelike.tell() if hasattr(wrapper.filelike, "tell") else 0
    except (AttributeError, OSError, ValueError):
        return None
    return fd, offset, max(0, st.st_size - offset)


cdef str _path_info(const tf_request *req, str script_name):
    """PATH_INFO: the target's path, percent-decoded bytes in a latin-1 str
    (PEP 3333), without the --script-name prefix."""
    cdef str raw
    if req.path_len == 0:
        raw = "/"  # an absolute-form target without a path
    elif memchr(req.path, b"%", req.path_len) != NULL:
        from urllib.parse import unquote_to_bytes
        raw = unquote_to_bytes(req.path[:req.path_len]).decode("latin-1")
    else:
        raw = PyUnicode_DecodeLatin1(req.path, req.path_len, NULL)
    if script_name and (raw == script_name or raw.startswith(script_name + "/")):
        raw = raw[len(script_name):]
    return raw


cdef void _add_header_keys(dict env, const tf_request *req) except *:
    """The request's headers as HTTP_* keys (and CONTENT_TYPE/LENGTH); repeated
    fields joined with commas."""
    cdef const tf_header *h
    cdef size_t i
    cdef bytes raw_name
    for i in range(req.num_headers):
        h = &req.headers[i]
        raw_name = h.name[:h.name_len]
        key = _ENVIRON_KEYS.get(raw_name)
        if key is None:
            if b"_" in raw_name:
                continue  # X_Foo would pose as X-Foo: dropped, as nginx and gunicorn do
            key = "HTTP_" + raw_name.upper().replace(b"-", b"_").decode("latin-1")
            if len(_ENVIRON_KEYS) < 512:
                _ENVIRON_KEYS[raw_name] = key
        value = PyUnicode_DecodeLatin1(h.value, h.value_len, NULL)
        previous = env.get(key)
        if previous is not None and (<str>key).startswith("HTTP_"):
            env[key] = previous + "," + value
        else:
            env[key] = value


cdef dict _wsgi_environ(Request request, dict base):
    """A PEP 3333 environ: base (the constant keys) plus this request's, built
    straight from the parsed head."""
    cdef dict env = base.copy()
    cdef const tf_request *req = request._req
    env["REQUEST_METHOD"] = _method_str(req.method, req.method_len)
    env["PATH_INFO"] = _path_info(req, env["SCRIPT_NAME"])
    env["QUERY_STRING"] = PyUnicode_DecodeLatin1(req.query, req.query_len, NULL)
    env["SERVER_PROTOCOL"] = "HTTP/1.1" if req.version_minor == 1 else "HTTP/1.0"
    env["REMOTE_ADDR"] = request.remote_addr  # resolves the scheme as well
    env["wsgi.url_scheme"] = request._scheme  # from a trusted proxy (tailfast.proxy)
    env["REMOTE_PORT"] = str(request._remote_port)
    _add_header_keys(env, req)
    if req.chunked and not request._streamed:
        env["CONTENT_LENGTH"] = str(request._body_len)  # decoded whole: its length is known
    host = _target_authority(req)
    if host is not None:
        env["HTTP_HOST"] = host  # RFC 9112 3.2.2: the target's authority wins
    else:
        host = env.get("HTTP_HOST")
    if host:
        name, colon, port = (<str>host).rpartition(":")
        if colon and "]" not in port and port.isdigit():
            env["SERVER_NAME"] = name
            env["SERVER_PORT"] = port
        else:
            env["SERVER_NAME"] = host
    if request._streamed:
        body_input = _BodyInput.__new__(_BodyInput)
        (<_BodyInput>body_input).request = request
        (<_BodyInput>body_input)._buf = b""
        env["wsgi.input"] = body_input
    else:
        env["wsgi.input"] = BytesIO(request.body) if request._body_len else _EMPTY_INPUT
    return env


cdef class WSGIHandler:
    """A native handler that runs a WSGI application (mounted at script_name)."""

    cdef object app
    cdef dict base

    def __init__(self, app, str script_name=""):
        self.app = app
        self.base = {
            "SCRIPT_NAME": script_name.rstrip("/"),
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,  # the body is complete: read() to EOF is safe
            "wsgi.file_wrapper": FileWrapper,
        }

    cdef _Exchange _run_app(self, Request request):
        """--threads, on a runner: calls the application; the loop sends the
        answer (_Exchange.answer). write() is buffered until then."""
        cdef _Exchange exchange = _Exchange.__new__(_Exchange)
        exchange.request = request
        exchange.length = -1
        exchange.complete = True
        exchange.early = []
        exchange.result = self.app(_wsgi_environ(request, self.base), exchange.start_response)
        return exchange

    def __call__(self, Request request):
        cdef _Exchange exchange = _Exchange.__new__(_Exchange)
        exchange.request = request
        exchange.length = -1
        exchange.complete = True
        try:
            result = self.app(_wsgi_environ(request, self.base), exchange.start_response)
        except ClientDisconnected:
            return ANSWERED  # write() found the client gone; nothing left to send
        cdef int sent = 0
        try:
            sent = exchange.finish(result)
        except ClientDisconnected:
            pass  # close() below still runs
        finally:
            if sent != _HANDED and type(result) is not list:
                _close_iterable(result)
        return ANSWERED
