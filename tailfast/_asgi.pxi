# ASGI 3 (HTTP, lifespan) and async def handlers: one asyncio loop per worker drives the C loop.
# Included by _core.pyx.
#
# The asyncio loop is the one that waits: the C loop's epoll descriptor is a
# reader on it, and each wake-up runs one non-blocking pass of the C loop
# (tf_worker_tick: accept, read, parse, timers, writes); the C loop's next
# deadline is a timer on the asyncio loop. A request becomes a coroutine:
# run at once, in the C loop's pass, until it first suspends (a coroutine
# that never waits costs no Task and answers inline, like a sync handler);
# when it suspends, its connection is deferred (tf_conn_defer) and _Steps
# drives the rest as a Task would, without a Task's costs. Frameworks (anyio:
# Starlette, FastAPI; Django) get a real Task from the start. receive() and send() act on the C connection directly: no
# Python protocol object per connection, one _Call object per request.

import asyncio
import collections.abc
from contextvars import copy_context as _copy_context

from tailfast._tf cimport (
    TF_BODY_AGAIN,
    tf_body_consume,
    tf_body_take,
    tf_conn_gone,
    tf_conn_queued,
    tf_conn_watch_output,
    tf_job_finish,
    tf_worker_close,
    tf_worker_open,
    tf_worker_tick,
    tf_worker_tick_wait,
    tf_worker_watch,
)

DEF _HIGH_WATER = 256 * 1024  # send() waits while more than this is queued for the client
DEF _LOWER_MAX = 128          # header names up to this length are lower-cased on the stack

cdef object _aloop = None       # this worker's asyncio loop
cdef bint _c_open = False       # the C loop is open (tf_worker_open .. tf_worker_close)
cdef object _tick_timer = None  # the C loop's next deadline on it
cdef double _tick_at = 0.0      # when that timer fires (the asyncio loop's clock)
cdef object _asgi_app = None    # the ASGI application (None: a native async handler)
cdef object _async_handler = None  # the native async handler
cdef bint _eager = True         # plain coroutines: driven by _Steps, first step at once
cdef dict _lifespan_state = None  # the state lifespan startup filled, copied per request
cdef str _root_path = ""        # --script-name
cdef object _server_addr = None  # (host, port) of the listening socket, None for a unix one
cdef dict _ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
cdef dict _DISCONNECT = {"type": "http.disconnect"}
cdef double _body_timeout = 0.0     # --body-timeout: a receive() waiting for body bytes


class AsyncHandler:
    """Marks the application for the event-loop runner: an ASGI 3 app
    (asgi=True) or a native `async def handler(request)`."""

    def __init__(self, app, bint asgi, str script_name=""):
        self.app = app
        self.asgi = asgi
        self.script_name = script_name.rstrip("/")

    def __call__(self, request):  # the native interface's signature, for tooling
        return self.app(request)


cdef inline bint _is_async(object handler):
    return type(handler) is AsyncHandler


# ------------------------------------------------------------- the scope

cdef bytes _lower(const char *p, size_t n):
    """A header name as lower-case bytes (one allocation)."""
    cdef char buf[_LOWER_MAX]
    cdef size_t i
    cdef char ch
    if n > _LOWER_MAX:
        return p[:n].lower()
    for i in range(n):
        ch = p[i]
        buf[i] = ch + 32 if b"A" <= ch <= b"Z" else ch
    return PyBytes_FromStringAndSize(buf, n)


cdef dict _http_scope(Request request):
    """The HTTP connection scope of request, built straight from the parsed head."""
    cdef const tf_request *req = request._req
    cdef const tf_header *h
    cdef size_t i
    cdef list headers = []
    for i in range(req.num_headers):
        h = &req.headers[i]
        headers.append((_lower(h.name, h.name_len), h.value[:h.value_len]))
    if request._remote is None:
        request._resolve_client()  # the scheme too (a trusted proxy's)
    client = request._remote
    raw_path = req.path[:req.path_len] if req.path_len else b"/"
    if memchr(req.path, b"%", req.path_len) == NULL:
        path = PyUnicode_DecodeLatin1(<const char *>raw_path, len(raw_path), NULL)
    else:
        path = request.path  # percent-decoded as UTF-8
    scope = {
        "type": "http",
        "asgi": _ASGI_VERSION,
        "http_version": "1.1" if req.version_minor == 1 else "1.0",
        "method": _method_str(req.method, req.method_len),
        "scheme": request._scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": req.query[:req.query_len],
        "root_path": _root_path,
        "headers": headers,
        "client": (client, request._remote_port) if client else None,
        "server": _server_addr,
    }
    if _lifespan_state is not None:
        scope["state"] = _lifespan_state.copy()  # shallow: a request's keys are its own
    return scope


# ------------------------------------------------- one request's exchange

cdef bint _valid_field(object value, bint name) except -1:
    """A header name (a token) or value (no CR, LF or NUL) as bytes."""
    if type(value) is not bytes:
        raise TypeError(f"ASGI header names and values must be bytes, got {type(value).__name__}")
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(value)
    if name and n == 0:
        raise ValueError("empty header name")
    for i in range(n):
        if p[i] == 13 or p[i] == 10 or p[i] == 0 or (name and (p[i] <= 32 or p[i] == 58)):
            raise ValueError(f"invalid header {'name' if name else 'value'} {value!r}")
    return True


# An exhausted iterator: its next() ends without raising StopIteration, so an
# await of _DONE (an `await send(...)` per message) raises nothing either.
cdef object _EXHAUSTED = iter(())


cdef class _Done:
    """An awaitable that is already done (send() that needed no wait): one object for all."""

    def __await__(self):
        return _EXHAUSTED


cdef _Done _DONE = _Done()


cdef class _Call:
    """One request on the event loop: the ASGI receive/send pair acting on the
    C connection, and what the coroutine's end does with the connection."""

    cdef Request request
    cdef tf_conn *conn      # NULL once the request is over (the C side may reuse it)
    cdef bint deferred      # the connection is parked (tf_conn_defer) until _finish
    cdef bint body_taken    # http.request was received
    cdef bint started       # http.response.start was sent
    cdef bint head_sent     # the head is with C (streaming, or the whole answer)
    cdef bint complete      # the last body chunk was sent
    cdef bint gone          # the client went away
    cdef bint timed_out     # cancelled for --timeout
    cdef bint expired       # a bounded wait (_wait_at_most) ran out
    cdef double since       # the request's start (scoreboard clock) once it went to a Task
    cdef int status
    cdef object headers
    cdef object waiter      # a Future: send() waiting for the output to drain,
                            # or receive() waiting for the end of the response
    cdef object task        # the Task that drives the coroutine after it suspended
    cdef bint asgi          # an ASGI call (else a native async handler's request)

    async def receive(self):
        cdef object event
        while not self.body_taken:
            event = self._request_event()
            if event is not None:
                return event
            await self._wait_at_most(_body_timeout)  # on_body: more of the body arrived
            if self.expired and not self.body_taken:
                self._body_expired()  # the client stalled mid-body: 408, or cut
                return _DISCONNECT
        while not (self.complete or self.gone or self.conn == NULL):
            await self._wait()
        return _DISCONNECT

    cdef object _request_event(self):
        """The next http.request: the whole body in one event when it came with
        the head; else what arrived of it (never waiting: None when nothing is
        here yet, cb->on_body then wakes the call; the request is deferred)."""
        cdef Request request = self.request
        cdef const char *data = NULL
        cdef ssize_t n
        if request._stream == NULL or self.conn == NULL:
            self.body_taken = True
            body = request.body if request._stream == NULL else b""
            return {"type": "http.request", "body": body, "more_body": False}
        n = tf_body_take(request._stream, &data)
        if n == TF_BODY_AGAIN:
            return None
        if n > 0:
            chunk = PyBytes_FromStringAndSize(data, n)
            tf_body_consume(request._stream, <size_t>n)
            return {"type": "http.request", "body": chunk, "more_body": True}
        self.body_taken = True
        if n == 0:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.gone = True  # the client went away mid-body (or sent a bad one)
        return _DISCONNECT

    cdef void _body_expired(self) noexcept:
        """No body bytes for --body-timeout while the application waited in
        receive(): 408 when nothing was sent yet (then the connection closes),
        else the answer is cut. Later send()s raise ClientDisconnected."""
        cdef tf_conn *conn = self.conn
        self.body_taken = True
        self.gone = True
        what = "answered 408" if not self.head_sent else "closing the connection"
        _log(f"worker {_worker_id} (pid {os.getpid()}): {_describe(self.request)}: no request "
             f"body bytes for --body-timeout {_body_timeout:g} s; {what}")
        if conn == NULL or tf_conn_gone(conn):
            return
        try:
            if not self.head_sent:
                self.head_sent = self.complete = True
                _send(conn, 408, [(b"connection", b"close")], CT_TEXT,
                      b"408 Request Timeout: the request body stopped arriving\n")
                self._after_write()
            elif not self.complete:
                tf_conn_respond_end(conn, 0)
        except BaseException:
            _log(f"worker {_worker_id}: error answering a stalled request body", True)

    def send(self, dict message):
        """ASGI send(). Acts at once; the awaitable it returns waits only while
        the client's output is above the high-water mark (no coroutine object
        per message otherwise)."""
        cdef str kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            if self.gone:
                raise ClientDisconnected("the client went away")
            status = message["status"]
            if type(status) is not int or not 100 <= status <= 999:
                raise ValueError(f"invalid ASGI response status {status!r}")
            self.status = status
            self.headers = self._checked_headers(message.get("headers", ()))
            self.started = True
            return _DONE
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started:
            raise RuntimeError("http.response.body sent before http.response.start")
        if self.gone or self.conn == NULL:
            raise ClientDisconnected("the client went away")
        if self.complete:
            raise RuntimeError("http.response.body sent after the response was complete")
        body = message.get("body", b"")
        if type(body) is not bytes:
            body = bytes(body)
        self._write(<bytes>body, message.get("more_body", False))
        if self.conn != NULL and not self.gone and tf_conn_queued(self.conn) > _HIGH_WATER:
            return self._drain()
        if self.gone and not self.complete:
            raise ClientDisconnected("the client went away")
        return _DONE

    async def _drain(self):
        # backpressure: the loop wakes us below the low-water mark; a client
        # that reads nothing for --request-timeout is dropped by the C sweep
        # (on_pull(abort): gone), as a stalled pulled sync body is
        while self.conn != NULL and not self.gone and tf_conn_queued(self.conn) > _HIGH_WATER:
            await self._wait()
        if self.gone and not self.complete:
            raise ClientDisconnected("the client went away")

    cdef object _checked_headers(self, object headers):
        if type(headers) is not list:
            headers = list(headers)
        for pair in <list>headers:
            if len(pair) != 2:
                raise ValueError(f"an ASGI header must be a (name, value) pair, got {pair!r}")
            _valid_field(pair[0], True)
            _valid_field(pair[1], False)
        return headers

    cdef int _write(self, bytes body, bint more) except -1:
        """Hands body to C: the whole answer in one write when it is the only
        chunk, else the head once, then chunks (framed by C)."""
        cdef tf_conn *conn = self.conn
        cdef int64_t length
        if not self.head_sent:
            # head_sent only once C has the head: a refused one (a bad
            # Content-Length, a head too large) still gets the 500
            length = -1 if more else PyBytes_GET_SIZE(body)
            if not more and not (self.request._req.is_head and PyBytes_GET_SIZE(body) == 0):
                _hand_to_c(conn, self.status, self.headers, None, body, -1)
                self.head_sent = self.complete = True
                return self._after_write()
            length = _declared_length(self.headers, length)
            _hand_to_c(conn, self.status, self.headers, None, None, length)
            self.head_sent = True
            # a pull source: tf_conn_write_body never waits for the client (send() does)
            tf_conn_pull(conn, <void *>self)
        if PyBytes_GET_SIZE(body) and tf_conn_write_body(
                conn, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body)) < 0:
            self.gone = True
        if not more:
            tf_conn_respond_end(conn, 1)
            self.complete = True
        return self._after_write()

    cdef int _after_write(self) except -1:
        if self.deferred and tf_conn_watch_output(self.conn) < 0:
            self.gone = True
        if self.complete:
            self._wake()  # a receive() waiting for the end returns http.disconnect
        return 0

    cdef object _wait(self):
        if self.waiter is None or self.waiter.done():
            self.waiter = _aloop.create_future()
        return self.waiter

    async def _wait_at_most(self, double seconds):
        """_wait() for at most seconds (0: no bound); self.expired tells which."""
        waiter = self._wait()
        self.expired = False
        if seconds <= 0:
            await waiter
            return
        timer = _aloop.call_later(seconds, _expire, self, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    cdef void _wake(self) noexcept:
        if self.waiter is not None:
            try:
                if not self.waiter.done():
                    self.waiter.set_result(None)
            except BaseException:
                pass

    cdef void _finish(self, object error) noexcept:
        """The coroutine ended (error: what it raised, else None): the answer is
        completed, cut, or replaced by a 500 (503 after a timeout), and the
        connection goes on."""
        global _answered
        cdef tf_conn *conn = self.conn
        if conn == NULL:
            return
        self.conn = NULL
        self.complete = True
        self.task = None  # no cycle call -> task -> call left for the GC
        self._wake()
        if isinstance(error, RequestTimeout):
            self.timed_out = True  # the primary's signal during a step: 503 as for sync handlers
        try:
            if error is not None and not isinstance(error, (asyncio.CancelledError,
                                                             ClientDisconnected,
                                                             RequestTimeout)):
                # after the client left (or stalled) an error is mostly its echo
                _log(f"worker {_worker_id}: error in ASGI application for "
                     f"{_describe(self.request)}"
                     + (f" after the client went away: {error!r}" if self.gone else ""),
                     not self.gone)
            if not tf_conn_gone(conn):
                if self.timed_out and not self.head_sent:
                    _answered = False
                    _answer_timeout(conn, self.request, False)
                elif self.head_sent and self.complete and error is not None:
                    pass  # answered before the error: nothing to undo
                elif self.head_sent and not _stream_done(self):
                    tf_conn_respond_end(conn, 0)  # cut: the client sees a truncated body
        except BaseException:
            _log(f"worker {_worker_id}: error ending an ASGI response", True)
        self.request._req = NULL  # the application never held the Request
        self.request._conn = NULL
        self.request._body_ptr = NULL
        if not tf_conn_gone(conn):
            tf_conn_pull(conn, NULL)
        if self.deferred and _c_open:  # after an immediate stop the C loop is gone
            tf_job_finish(&self.request._job)  # on_complete, then the next request


def _expire(_Call call, waiter):
    """A bounded wait of call's ran out (its timer)."""
    if not waiter.done():
        call.expired = True
        waiter.set_result(None)


cdef inline bint _stream_done(_Call call):
    return call.complete and not call.gone


cdef int64_t _declared_length(object headers, int64_t fallback):
    """The application's Content-Length, else fallback (-1: chunked)."""
    for name, value in headers:
        if len(<bytes>name) == 14 and (<bytes>name).lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"invalid Content-Length {value!r}") from None
    return fallback


# ------------------------------------------------------- driving coroutines

cdef object _enter_task = asyncio.tasks._enter_task  # what makes current_task() answer
cdef object _leave_task = asyncio.tasks._leave_task


cdef class _Steps:
    """Drives a plain coroutine (a raw ASGI app's, a native async handler's)
    as an asyncio Task would, without being one: each step runs in the
    request's own context with current_task() answering this object; a
    yielded future resumes it when done; cancel(), cancelling() and
    uncancel() behave as a Task's, so asyncio.timeout() and TaskGroup work in
    it. The first step runs at once, in the C loop's pass: a coroutine that
    never waits is answered there. A Task costs a call_soon'd first step and a
    WeakSet registration per request, about 3 us of the 18 a request that
    awaits costs; frameworks (anyio wants a real Task) still get one."""

    cdef object coro
    cdef object context
    cdef _Call call
    cdef object waiting       # the future the coroutine awaits
    cdef object cancel_msg
    cdef int cancel_requests
    cdef bint must_cancel     # cancel() found nothing to cancel: the next step throws
    cdef bint parked          # its connection is deferred: its end goes to _ended
    cdef bint finished

    def _step(self, exc):
        cdef object yielded
        if self.finished:
            return
        if self.must_cancel:
            if not isinstance(exc, asyncio.CancelledError):
                exc = asyncio.CancelledError() if self.cancel_msg is None else \
                    asyncio.CancelledError(self.cancel_msg)
            self.must_cancel = False
        self.waiting = None
        _enter_task(_aloop, self)
        try:
            yielded = self.coro.send(None) if exc is None else self.coro.throw(exc)
        except StopIteration as stop:
            self._end(stop.value, None)
        except BaseException as error:
            self._end(None, error)
        else:
            self._suspend(yielded)
        finally:
            _leave_task(_aloop, self)

    def _wakeup(self, future):
        try:
            future.result()
        except BaseException as exc:
            self._step(exc)
        else:
            self._step(None)

    cdef void _suspend(self, object yielded) noexcept:
        """What a Task does with what its coroutine yielded."""
        blocking = getattr(yielded, "_asyncio_future_blocking", None)
        try:
            if blocking is True and yielded.get_loop() is _aloop:
                yielded._asyncio_future_blocking = False
                yielded.add_done_callback(self._wakeup, context=self.context)
                self.waiting = yielded
                if self.must_cancel and yielded.cancel(msg=self.cancel_msg):
                    self.must_cancel = False
                return
            if yielded is None:  # a bare yield (asyncio.sleep(0)): again, soon
                _aloop.call_soon(self._step, None, context=self.context)
                return
            problem = RuntimeError(f"a request's coroutine yielded {yielded!r}, not a future "
                                   "awaited on this worker's event loop")
            _aloop.call_soon(self._step, problem, context=self.context)
        except BaseException as exc:
            self._end(None, exc)

    cdef void _end(self, object result, object error) noexcept:
        self.finished = True
        self.coro = self.context = None  # no cycle through the frame left for the GC
        if self.parked:
            _ended(self.call, result, error)
        else:  # in its first step: answered in this pass, no deferral
            self.call.task = None
            _answer_inline(self.call.conn, self.call, result, error)

    # the parts of asyncio.Task's interface code running in it may use
    def cancel(self, msg=None):
        if self.finished:
            return False
        self.cancel_requests += 1
        if self.waiting is not None and self.waiting.cancel(msg=msg):
            return True  # its wake-up throws CancelledError in
        self.must_cancel = True
        self.cancel_msg = msg
        return True

    def cancelling(self):
        return self.cancel_requests

    def uncancel(self):
        if self.cancel_requests > 0:
            self.cancel_requests -= 1
        return self.cancel_requests

    def done(self):
        return self.finished

    def get_loop(self):
        return _aloop

    def get_coro(self):
        return self.coro

    def get_name(self):
        return f"tailfast-request-{id(self):x}"

    def __repr__(self):
        return f"<tailfast request coroutine {self.coro!r} done={self.finished}>"


async def _driven(_Call call, object coro):
    """The coroutine protocol a framework's Task drives: the
    request's coroutine awaited, its end handed to the request. A Cython
    coroutine, so the Task resumes it (and it the request's coroutine) through
    am_send: no StopIteration raised per request, as a wrapper's send() must."""
    try:
        result = await coro
    except GeneratorExit:
        raise  # closed, not ended: the loop is going away
    except BaseException as exc:
        _ended(call, None, exc)
    else:
        _ended(call, result, None)


cdef void _ended(object owner, object result, object error) noexcept:
    """A coroutine driven by a Task ended."""
    cdef _Call call = <_Call>owner
    cdef Request request = call.request
    if call.asgi:
        call._finish(error)
        return
    # a native async handler: its value is answered by on_complete (_on_complete)
    if call.timed_out and isinstance(error, asyncio.CancelledError):
        error = RequestTimeout(f"the request ran past --timeout {_timeout:g} s")
    request._result = result
    request._error = error
    call.conn = NULL
    call.task = None  # no cycle left for the GC
    if _c_open:
        tf_job_finish(&request._job)


cdef void _park(tf_conn *conn, _Call call) noexcept:
    """The coroutine goes on after this pass: its connection is deferred until
    it ends (tf_job_finish)."""
    cdef Request request = call.request
    Py_INCREF(request)  # the job's reference, dropped by on_complete
    request._job.data = <void *>request
    request._result = call  # for on_overrun; a native handler's value replaces it
    tf_conn_defer(conn, &request._job)
    call.deferred = True
    if tf_sb_me != NULL:
        call.since = tf_sb_me.request_started  # for the primary's signal (_overrun_in_step)
    if call.asgi:
        tf_conn_pull(conn, <void *>call)  # told of the peer leaving, and of drained output


cdef void _defer_to_task(tf_conn *conn, _Call call, object coro) noexcept:
    """A framework's coroutine: its connection is parked and a Task drives it
    from its first line (anyio asks for an asyncio.Task at once)."""
    _park(conn, call)
    try:
        call.task = _aloop.create_task(_driven(call, coro))
    except BaseException as exc:
        _ended(call, None, exc)


cdef int _async_on_request(void *ctx, tf_conn *conn, const tf_request *req,
                           const char *body, size_t body_len) noexcept:
    """on_request with the event-loop runner: starts the request's coroutine."""
    if _asgi_app is not None and tf_ws_is_upgrade(req):
        return _ws_on_request(conn, req, body, body_len)  # a websocket scope (_asgi_ws.pxi)
    cdef Request request = Request.__new__(Request)
    cdef _Call call = _Call.__new__(_Call)
    request._req = req
    request._conn = conn
    _attach_body(request, conn, body, body_len)  # body NULL: it streams (tf_conn_body)
    request._version_minor = req.version_minor
    request.worker_id = _worker_id
    call.request = request
    call.conn = conn
    global _answered
    _answered = False
    try:
        if _asgi_app is not None:
            call.asgi = True
            coro = _asgi_app(_http_scope(request), call.receive, call.send)
        else:
            request._on_loop = True  # a streamed body is read with await request.read()
            if request._stream != NULL:
                request._result = call  # on_body wakes it (_read_async)
            coro = _async_handler(request)
    except BaseException as exc:
        return _answer_inline(conn, call, None, exc)
    if not _eager:
        _defer_to_task(conn, call, coro)
        return TF_DEFERRED
    cdef _Steps steps = _Steps.__new__(_Steps)
    steps.coro = coro
    steps.call = call
    # in a context of its own, as a Task would run it: what the request sets
    # in context variables stays its own
    steps.context = _copy_context()
    call.task = steps
    if call.asgi and request._stream != NULL:
        # its receive() waits for what on_body announces: parked before it runs
        steps.parked = True
        _park(conn, call)
        _aloop.call_soon(steps._step, None, context=steps.context)
        return TF_DEFERRED
    try:
        steps.context.run(steps._step, None)
    except BaseException as exc:  # _step lets nothing out: this is the run's own failure
        steps._end(None, exc)
    if steps.finished:
        return 0
    steps.parked = True
    _park(conn, call)
    return TF_DEFERRED


cdef int _answer_inline(tf_conn *conn, _Call call, object result, object error) noexcept:
    """The coroutine ended in its first step: answered in this pass, no Task."""
    cdef Request request = call.request
    if call.asgi:
        call._finish(error)
        return 0
    call.conn = NULL
    request._result = None  # no cycle request -> call -> request
    try:
        if error is not None:
            raise error
        _respond(conn, result)
    except RequestTimeout:
        _answer_timeout(conn, request)
    except HTTPError as exc:
        _answer_http_error(conn, request, exc)
    except BaseException:
        _log_handler_error(request)
    finally:
        error = None
    if Py_REFCNT(request) > 1:
        try:
            request._detach()
        except BaseException:
            pass
    return 0


async def _read_async(Request request):
    """await request.read() for a streamed body in a native async handler: the
    body's chunks as cb->on_body announces them, never blocking the loop; at
    most --body-timeout between two arrivals (then BodyTimeout: 408)."""
    cdef _Call call = <_Call>request._result
    cdef list parts = []
    if request._stream_state:
        raise RuntimeError("the request body is already being read")
    request._stream_state = 1
    while True:
        chunk = request._take_now(_STREAM_CHUNK * 16)
        if chunk is None:
            await call._wait_at_most(_body_timeout)
            if call.expired:
                raise BodyTimeout("no request body bytes arrived within --body-timeout")
        elif chunk:
            parts.append(chunk)
        else:
            request._body = b"".join(parts)
            return request._body


cdef int _async_on_complete(void *ctx, tf_job *job, int alive) noexcept:
    """A Task finished a deferred request (tf_job_finish): an ASGI call has
    answered already; a native handler's value is answered here."""
    cdef Request request = <Request>job.data
    if _asgi_app is not None:
        Py_DECREF(request)  # the job's reference; `request` holds its own
        request._result = None
        return 0
    return _on_complete(ctx, job, alive)


cdef void _async_on_overrun(void *ctx, tf_job *job) noexcept:
    """A deferred request ran past --timeout: its Task is cancelled (503 when
    nothing was sent yet; a started answer is cut)."""
    cdef Request request = <Request>job.data
    cdef _Call call
    if not isinstance(request._result, _Call):  # a _WsCall before its accept too
        return
    call = <_Call>request._result
    if call.conn == NULL or call.task is None:
        return  # ended: its answer is on the way
    _log(f"worker {_worker_id} (pid {os.getpid()}): {_describe(request)} ran past "
         f"--timeout {_timeout:g} s; cancelling it")
    call.timed_out = True
    try:
        call.task.cancel()
    except BaseException:
        _log(f"worker {_worker_id}: cannot cancel a timed-out request", True)


cdef int _overrun_in_step() except -1:
    """The primary's timeout signal while no request is being dispatched: when
    the Task step running now (blocking the loop: no await) is a request's
    that ran past --timeout, RequestTimeout is raised in it (503), as in an
    eager step or a sync handler; another request's overrun is the sweep's
    (on_overrun) once the loop runs again."""
    if _aloop is None:
        return 0
    try:
        task = asyncio.current_task(_aloop)
    except RuntimeError:
        return 0  # the loop is not running
    if type(task) is not _Steps:
        return 0  # a framework's Task: the sweep's (on_overrun)
    cdef _Call call = (<_Steps>task).call
    if call.conn != NULL and call.since > 0 and time.monotonic() - call.since >= _timeout:
        raise RequestTimeout(f"the request ran for {time.monotonic() - call.since:.2f} s, "
                             f"past --timeout {_timeout:g} s")
    return 0


cdef void _async_on_body(void *ctx, tf_job *job) noexcept:
    """More of a deferred ASGI request's body arrived (or its end, or an error)."""
    cdef Request request = <Request>job.data
    if type(request._result) is _Call:
        (<_Call>request._result)._wake()


cdef int _async_on_pull(void *ctx, tf_conn *conn, void *source, int abort) noexcept:
    """A parked ASGI call's connection drained (or, abort, is gone); any other
    source is a streamed body (_response.pxi)."""
    cdef _Call call
    if type(<object>source) is not _Call:
        return _on_pull(ctx, conn, source, abort)
    call = <_Call>source
    if abort:
        call.gone = True  # its next send() raises, a waiting receive() returns
        call._wake()
        return 0  # the connection dropped its pointer
    call._wake()
    return 1


# ------------------------------------------------------------ the loops

def _tick():
    """The C loop's descriptor is readable, or its deadline came: one pass."""
    global _tick_timer, _tick_at
    cdef double delay = 0.0
    if not tf_worker_tick(&delay):
        _aloop.stop()
        return
    when = _aloop.time() + delay
    # one timer at a time; re-armed only when the C loop wants to wake sooner
    if _tick_timer is None or when < _tick_at - 0.001:
        if _tick_timer is not None:
            _tick_timer.cancel()
        _tick_at = when
        _tick_timer = _aloop.call_at(when, _on_tick_timer)


def _on_tick_timer():
    global _tick_timer
    _tick_timer = None
    _tick()


def new_event_loop(str choice="auto"):
    """An event loop of the kind --loop names: uvloop (when installed, for
    auto), or asyncio's own."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise RuntimeError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


cdef object _start_async_services(object loop, CConfig c):
    """Per-worker services that need the event loop, started once it exists and
    before the first request: errors the loop reports are logged, and the
    loop-stall watchdog (--loop-stall-warning). Returns what to stop at the end."""
    def on_error(loop, context):
        exc = context.get("exception")
        _log(f"worker {_worker_id}: event loop: {context.get('message', 'error')}"
             + (f": {exc!r}" if exc is not None else ""))
    loop.set_exception_handler(on_error)
    from tailfast import watchdog
    return watchdog.start(loop, c.loop_stall_warning)


cdef object _listen_address(int fd):
    """(host, port) of the listening socket (the scope's "server"); None for a unix socket."""
    import socket
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        addr = s.getsockname()
    finally:
        s.close()
    return (addr[0], addr[1]) if type(addr) is tuple else None


cdef int _run_async_worker(CConfig c, tf_worker_callbacks *cb) except -1:
    """Runs this worker with an event loop: lifespan startup, the C loop driven
    from the event loop until it stops, lifespan shutdown. Returns the exit status."""
    global _aloop, _asgi_app, _async_handler, _eager, _root_path, _server_addr, _tick_timer
    global _c_open, _lifespan_state, _body_timeout
    _body_timeout = c.worker.body_timeout
    handler = _handler
    _root_path = handler.script_name
    if handler.asgi:
        _asgi_app = handler.app
        _lifespan_state = {}  # what lifespan startup fills, if the app supports it
        # frameworks ask for asyncio.current_task() at once: a Task from the start
        _eager = inspect.iscoroutinefunction(handler.app)
    else:
        _async_handler = handler.app
        _eager = True
    _server_addr = _listen_address(c.worker.listen_fd)
    cb.on_request = _async_on_request
    cb.on_complete = _async_on_complete
    cb.on_overrun = _async_on_overrun
    cb.on_pull = _async_on_pull
    cb.on_body = _async_on_body
    cb.on_ws = _ws_on_event
    loop = new_event_loop(c.loop)
    asyncio.set_event_loop(loop)
    _aloop = loop
    cdef int fd = -1
    cdef int status = 0
    lifespan = None
    services = None
    try:
        services = _start_async_services(loop, c)
        if _asgi_app is not None:
            lifespan = _Lifespan(_asgi_app, loop)
            if not loop.run_until_complete(lifespan.startup()):
                return TF_EXIT_FATAL  # reported like a failed import, backed off like one
        status = tf_worker_open(&c.worker, cb, &fd)
        if status != 0:
            return status
        _c_open = True
        if os.environ.get("TF_BENCH_DRIVE") == "c" and hasattr(loop, "_run_once"):
            try:
                _drive_from_c(loop)  # bench/asgi.py's comparison of the two arrangements
            finally:
                _c_open = False
                status = tf_worker_close()
        else:
            loop.add_reader(fd, _tick)
            loop.call_soon(_tick)
            try:
                loop.run_forever()
            finally:
                loop.remove_reader(fd)
                if _tick_timer is not None:
                    _tick_timer.cancel()
                    _tick_timer = None
                _c_open = False
                status = tf_worker_close()
        if lifespan is not None:
            loop.run_until_complete(lifespan.shutdown())
        return status
    finally:
        if services is not None:
            services.stop()
        _finish_loop(loop)


cdef int _drive_from_c(object loop) except -1:
    """The reverse arrangement, measured against the default by bench/asgi.py
    (TF_BENCH_DRIVE=c, asyncio's own loop only): the C loop waits, with the
    asyncio selector's descriptor in its epoll set, and asyncio's loop runs one
    iteration (its private _run_once; uvloop has no such call) after each pass."""
    cdef double delay = 0.0
    cdef double wait
    tf_worker_watch(loop._selector._selector.fileno())
    asyncio.events._set_running_loop(loop)
    loop._thread_id = threading.get_ident()
    noop = asyncio.Handle(lambda: None, (), loop)  # keeps _run_once from waiting itself
    try:
        while True:
            if loop._ready:
                wait = 0.0
            elif loop._scheduled:
                wait = max(0.0, loop._scheduled[0]._when - loop.time())
            else:
                wait = 1.0
            if not tf_worker_tick_wait(wait, &delay):
                return 0
            loop._ready.append(noop)
            loop._run_once()
    finally:
        asyncio.events._set_running_loop(None)
        loop._thread_id = None


cdef void _finish_loop(object loop) noexcept:
    """Cancels what is left on the loop (background tasks) and closes it."""
    global _aloop
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    except BaseException:
        _log(f"worker {_worker_id}: error closing the event loop", True)
    _aloop = None


# --------------------------------------------------------------- lifespan

class _Lifespan:
    """The ASGI lifespan protocol for one worker: startup before it accepts,
    shutdown after it stopped serving. An app that raises on the lifespan
    scope before answering does not support it: the worker carries on."""

    def __init__(self, app, loop):
        self.app = app
        self.loop = loop
        self.state = {}
        self.events = asyncio.Queue()
        self.answers = asyncio.Queue()
        self.task = None
        self.supported = True

    async def receive(self):
        return await self.events.get()

    async def send(self, message):
        await self.answers.put(message)

    async def run(self):
        scope = {"type": "lifespan", "asgi": _ASGI_VERSION, "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            await self.answers.put({"type": "_raised", "error": exc})
        else:
            await self.answers.put({"type": "_returned"})

    async def _step(self, str event):
        """Sends event; the app's answer: "complete", "failed" (logged) or "gone"."""
        await self.events.put({"type": f"lifespan.{event}"})
        answer = await self.answers.get()
        kind = answer["type"]
        if kind == f"lifespan.{event}.complete":
            return "complete"
        if kind == f"lifespan.{event}.failed":
            _log(f"worker {_worker_id} (pid {os.getpid()}): lifespan {event} failed: "
                 f"{answer.get('message', '')}")
            return "failed"
        if kind == "_raised" and event == "startup":
            # raised before answering startup: lifespan unsupported (uvicorn's auto)
            self.supported = False
            exc = answer["error"]
            if not isinstance(exc, (asyncio.CancelledError,)):
                _pylog.log(f"worker {_worker_id}: the application does not support lifespan "
                           f"({type(exc).__name__}: {exc}); going on without it", _pylog.DEBUG)
            return "unsupported"
        if kind == "_raised":
            exc = answer["error"]
            _log(f"worker {_worker_id}: lifespan {event} raised {type(exc).__name__}: {exc}")
            return "failed"
        return "gone"

    async def startup(self):
        """True to go on serving (started, or lifespan unsupported)."""
        self.task = self.loop.create_task(self.run())
        result = await self._step("startup")
        if result == "complete":
            _lifespan_state.update(self.state)
            return True
        if result == "unsupported" or result == "gone":
            self.supported = False
            return True
        return False

    async def shutdown(self):
        if not self.supported or self.task is None or self.task.done():
            return
        await self._step("shutdown")
        try:
            await asyncio.wait_for(self.task, 5.0)
        except BaseException:
            pass
