# ASGI WebSocket: the websocket scope, and receive/send on a C connection in WebSocket mode (ws_conn.c).
# Included by _core.pyx after _asgi.pxi.
#
# An upgrade request is deferred like an HTTP request (tf_conn_defer) while
# the application decides; websocket.accept writes the 101 in C
# (tf_ws_conn_accept) and ends the deferral at once (tf_job_finish): an open
# WebSocket is a connection, not a request in flight (no --timeout, not
# busy). From then on C parses frames and hands whole messages to
# _ws_on_event, which queues them for receive(); above a few queued messages
# (or bytes) C stops reading until the application catches up. send() writes
# one frame through the connection's output and waits while more than
# _HIGH_WATER bytes are queued, like an HTTP streamed send. Instead of the
# accept, the application may answer with an HTTP response (the WebSocket
# Denial Response extension, advertised in the scope): an HTTP _Call on the
# same deferred request writes it, streamed or whole, through the C writer.

from tailfast._tf cimport (
    TF_WS_CLOSED,
    TF_WS_MESSAGE,
    TF_WS_WRITABLE,
    tf_ws_conn_accept,
    tf_ws_conn_close,
    tf_ws_conn_resume,
    tf_ws_conn_send,
    tf_ws_close_code_valid,
    tf_ws_handshake,
    tf_ws_is_upgrade,
    tf_ws_subprotocols,
    tf_ws_token,
)

DEF _WS_QUEUE_MESSAGES = 16            # received messages waiting for receive(): reading stops
DEF _WS_QUEUE_BYTES = 1024 * 1024      # ... or this many bytes of them
DEF _WS_MAX_SUBPROTOCOLS = 32

from cpython.unicode cimport PyUnicode_DecodeUTF8
cdef dict _WS_CONNECT = {"type": "websocket.connect"}


cdef dict _ws_scope(Request request):
    """The websocket scope: the HTTP scope's fields without method, ws/wss,
    and the offered subprotocols."""
    cdef tf_ws_token tokens[_WS_MAX_SUBPROTOCOLS]
    cdef ssize_t i, n = tf_ws_subprotocols(request._req, tokens, _WS_MAX_SUBPROTOCOLS)
    scope = _http_scope(request)
    del scope["method"]
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    scope["subprotocols"] = [
        PyUnicode_DecodeLatin1(tokens[i].s, <Py_ssize_t>tokens[i].len, NULL)
        for i in range(min(n, _WS_MAX_SUBPROTOCOLS))]
    if "state" not in scope:
        scope["state"] = {}
    scope["extensions"] = {"websocket.http.response": {}}  # the denial response (_deny_with)
    return scope


cdef class _WsCall(_Call):
    """One WebSocket on the event loop: ASGI receive/send over the C
    connection, before the accept (deferred request) and after (WebSocket mode)."""

    cdef object messages       # deque of websocket.receive events not yet taken
    cdef Py_ssize_t queued     # their bytes
    cdef bint connect_taken    # websocket.connect was received
    cdef bint accepted
    cdef bint closed           # the WebSocket is over (either side), or denied
    cdef bint paused           # C stopped reading: the queue is full
    cdef int close_code
    cdef str close_reason
    cdef _Call denial          # the HTTP answer sent instead of the accept, once started

    async def receive(self):
        if not self.connect_taken:
            self.connect_taken = True
            return _WS_CONNECT
        while True:
            if self.messages:
                event = self.messages.popleft()
                self.queued -= len(event.get("text") or event.get("bytes") or b"")
                if self.paused and self.conn != NULL and len(self.messages) < _WS_QUEUE_MESSAGES // 2:
                    self.paused = False
                    tf_ws_conn_resume(self.conn)  # may queue more (on_ws) right here
                return event
            if self.closed or (self.accepted and self.conn == NULL):
                return {"type": "websocket.disconnect", "code": self.close_code,
                        "reason": self.close_reason or ""}
            await self._wait()

    def send(self, dict message):
        """ASGI send() for websocket.accept / send / close."""
        cdef str kind = message["type"]
        if kind == "websocket.send":
            return self._send_message(message)
        if kind == "websocket.accept":
            self._accept(message)
            return _DONE
        if kind == "websocket.close":
            code = message.get("code") or 1000
            if not tf_ws_close_code_valid(code):
                raise ValueError(f"websocket.close: {code} is not a close code one may send")
            self._close(code, message.get("reason") or "")
            return _DONE
        if kind == "websocket.http.response.start" or kind == "websocket.http.response.body":
            return self._deny_with(kind, message)
        raise RuntimeError(f"unexpected ASGI message {kind!r} on a websocket")

    cdef object _deny_with(self, str kind, dict message):
        """The WebSocket Denial Response extension: an HTTP response instead of
        the accept. Its messages go to an HTTP call on the same deferred
        request (checks, one writev for a whole answer, streaming with
        backpressure, the end cut or completed by _finish); the deferral is
        that call's from its start on."""
        cdef _Call http
        if kind == "websocket.http.response.body":
            if self.denial is None:
                raise RuntimeError(
                    "websocket.http.response.body before websocket.http.response.start")
            return self.denial.send({"type": "http.response.body",
                                     "body": message.get("body", b""),
                                     "more_body": message.get("more_body", False)})
        if self.accepted or self.closed:
            raise RuntimeError("websocket.http.response.start after the WebSocket was "
                               "accepted, closed or denied")
        http = _Call.__new__(_Call)
        http.request = self.request
        http.conn = self.conn
        http.asgi = True
        http.body_taken = True
        http.gone = self.conn == NULL or tf_conn_gone(self.conn)
        # checked before anything changes hands: a bad start raises in the app
        # and the upgrade is still its to accept, close or deny
        http.send({"type": "http.response.start", "status": message["status"],
                   "headers": message.get("headers", ())})
        http.deferred = self.deferred
        self.deferred = False
        self.denial = http
        self.closed = True  # receive() returns websocket.disconnect from now on
        # the call is the pull source: told of drained output and of the peer leaving
        tf_conn_pull(self.conn, <void *>http)
        return _DONE

    cdef object _send_message(self, dict message):
        if not self.accepted:
            raise RuntimeError("websocket.send before websocket.accept")
        if self.conn == NULL:
            raise ClientDisconnected("the WebSocket is closed")
        text = message.get("text")
        cdef bytes data
        cdef int opcode = 1
        if text is not None:
            data = (<str>text).encode("utf-8")
        else:
            opcode = 2
            data = bytes(message.get("bytes") or b"")
        if tf_ws_conn_send(self.conn, opcode, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)) < 0:
            raise ClientDisconnected("the WebSocket is closed")
        if self.conn != NULL and tf_conn_queued(self.conn) > _HIGH_WATER:
            return self._ws_drain()
        return _DONE

    async def _ws_drain(self):
        while self.conn != NULL and tf_conn_queued(self.conn) > _HIGH_WATER:
            await self._wait()  # backpressure: on_ws(TF_WS_WRITABLE) wakes us

    cdef int _accept(self, dict message) except -1:
        cdef tf_header stack[_STACK_HEADERS]
        cdef tf_header *hdrs = stack
        cdef Py_ssize_t i
        if self.accepted or self.closed:
            raise RuntimeError("websocket.accept after the WebSocket was accepted or closed")
        headers = self._checked_headers(message.get("headers") or ())
        if message.get("subprotocol"):
            chosen = str(message["subprotocol"]).encode("latin-1")
            _valid_field(chosen, False)
            headers.append((b"sec-websocket-protocol", chosen))
        if self.conn == NULL or tf_conn_gone(self.conn):
            raise ClientDisconnected("the client went away before the accept")
        if len(headers) > _STACK_HEADERS:
            hdrs = <tf_header *>malloc(len(headers) * sizeof(tf_header))
            if hdrs == NULL:
                raise MemoryError()
        try:
            for i, (name, value) in enumerate(headers):
                hdrs[i].name = PyBytes_AS_STRING(name)
                hdrs[i].name_len = PyBytes_GET_SIZE(name)
                hdrs[i].value = PyBytes_AS_STRING(value)
                hdrs[i].value_len = PyBytes_GET_SIZE(value)
            if tf_ws_conn_accept(self.conn, hdrs, len(headers), <void *>self) < 0:
                raise ClientDisconnected("the WebSocket could not be accepted")
        finally:
            if hdrs != stack:
                free(hdrs)
        Py_INCREF(self)  # C's reference (the handle), dropped at TF_WS_CLOSED
        self.accepted = True
        self.close_code = 1006
        self._end_deferral()  # C reads frames from here on
        return 0

    cdef int _close(self, int code, str reason) except -1:
        cdef bytes why
        if self.denial is not None:
            raise RuntimeError("websocket.close after websocket.http.response.start")
        if not self.accepted:
            self._deny(403)
            return 0
        if self.conn != NULL:
            why = reason.encode("utf-8")
            tf_ws_conn_close(self.conn, code, PyBytes_AS_STRING(why), PyBytes_GET_SIZE(why))
        return 0

    cdef void _deny(self, int status) noexcept:
        """Before the accept: answers status (403 for a close, 500 for an
        error) and ends the deferral."""
        self.closed = True
        try:
            if self.conn != NULL and not tf_conn_gone(self.conn):
                _hand_to_c(self.conn, status, [], None, b"", -1)
        except BaseException:
            _log(f"worker {_worker_id}: error denying a WebSocket", True)
        self._end_deferral()
        self.conn = NULL

    cdef void _end_deferral(self) noexcept:
        """The upgrade request is over: the connection goes on (WebSocket
        mode after an accept, else the next request)."""
        if not self.deferred:
            return
        self.deferred = False
        self.request._req = NULL
        self.request._conn = NULL
        self.request._body_ptr = NULL
        if _c_open:
            tf_job_finish(&self.request._job)

    cdef void _finish(self, object error) noexcept:
        """The application's coroutine ended: an open WebSocket is closed
        (1000, or 1011 after an error); one never accepted is denied; a
        denial response is completed, or cut (503 after --timeout)."""
        self.task = None
        if self.denial is not None:
            self.denial.timed_out = self.timed_out
            self.denial._finish(error)  # logs an error, ends the deferral
            self._wake()
            return
        if error is not None and not isinstance(error, (asyncio.CancelledError,
                                                         ClientDisconnected)):
            _log(f"worker {_worker_id}: error in ASGI application for WebSocket "
                 f"{self.request.path if self.request._req != NULL else ''}", True)
        if not self.accepted:
            if self.deferred:
                self._deny(500 if error is not None else 403)
        elif self.conn != NULL:
            tf_ws_conn_close(self.conn, 1011 if error is not None else 1000, NULL, 0)
        self.closed = True
        self._wake()


cdef int _ws_on_request(tf_conn *conn, const tf_request *req, const char *body,
                        size_t body_len) noexcept:
    """An upgrade request with an ASGI application: a bad handshake is
    answered here (400, or 426 naming version 13); else a Task runs the
    application with the websocket scope."""
    cdef char accept[32]
    cdef int status = tf_ws_handshake(req, accept, NULL)
    cdef Request request
    cdef _WsCall call
    try:
        if status != 0:
            _hand_to_c(conn, status,
                       [(b"sec-websocket-version", b"13")] if status == 426 else [],
                       None, b"", -1)
            return 0
        request = Request.__new__(Request)
        request._req = req
        request._conn = conn
        _attach_body(request, conn, body, body_len)
        request._version_minor = req.version_minor
        request.worker_id = _worker_id
        call = _WsCall.__new__(_WsCall)
        call.request = request
        call.conn = conn
        call.asgi = True
        call.messages = collections.deque()
        call.close_code = 1006
        coro = _asgi_app(_ws_scope(request), call.receive, call.send)
    except BaseException:
        _log(f"worker {_worker_id}: error starting a WebSocket", True)
        try:
            _hand_to_c(conn, 500, [], None, b"", -1)
        except BaseException:
            return -1
        return 0
    _ws_defer(conn, call, coro)
    return TF_DEFERRED


cdef void _ws_defer(tf_conn *conn, _WsCall call, object coro) noexcept:
    """Parks the upgrade request and gives the coroutine a Task (no pull
    source: a client leaving before the accept closes the parked connection)."""
    cdef Request request = call.request
    Py_INCREF(request)  # the job's reference, dropped by on_complete
    request._job.data = <void *>request
    request._result = call  # for on_overrun
    tf_conn_defer(conn, &request._job)
    call.deferred = True
    try:
        call.task = _aloop.create_task(_driven(call, coro))
    except BaseException as exc:
        _ended(call, None, exc)


cdef int _ws_on_event(void *ctx, tf_conn *conn, void *handle, int kind, int code,
                      const char *data, size_t n) noexcept:
    """cb->on_ws: a message for receive(), output drained, or the end."""
    cdef _WsCall call = <_WsCall>handle
    try:
        if kind == TF_WS_MESSAGE:
            if code == 1:
                call.messages.append({"type": "websocket.receive",
                                      "text": PyUnicode_DecodeUTF8(data, <Py_ssize_t>n, NULL)})
            else:
                call.messages.append({"type": "websocket.receive",
                                      "bytes": PyBytes_FromStringAndSize(data, <Py_ssize_t>n)})
            call.queued += <Py_ssize_t>n
            call._wake()
            if len(call.messages) >= _WS_QUEUE_MESSAGES or call.queued >= _WS_QUEUE_BYTES:
                call.paused = True
                return 1
            return 0
        if kind == TF_WS_CLOSED:
            call.conn = NULL
            call.close_code = code
            call.close_reason = PyUnicode_DecodeUTF8(data, <Py_ssize_t>n, "replace") if n else ""
            call._wake()
            Py_DECREF(call)  # C's reference, taken at the accept
            return 0
        call._wake()  # TF_WS_WRITABLE
    except BaseException:
        _log(f"worker {_worker_id}: error in a WebSocket event", True)
    return 0
