# A worker's side: GIL callbacks, on_request, timeouts, the metrics endpoint, the loop's entry.
# Included by _core.pyx.


cdef object _handler = None


cdef void _release_gil(void *ctx) noexcept:
    global _saved_thread
    _saved_thread = PyEval_SaveThread()


cdef void _acquire_gil(void *ctx) noexcept:
    global _saved_thread
    PyEval_RestoreThread(_saved_thread)
    _saved_thread = NULL


cdef void _log(str line, bint with_traceback=False) noexcept:
    """Writes "tailfast: <line>" (and the exception being handled) to stderr at
    level error (tailfast.log, --log-level); called from C callbacks, so it never raises."""
    try:
        _pylog.log(line, _pylog.ERROR, with_traceback)
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
    if me == NULL or _timeout <= 0:
        return
    if me.state != TF_W_BUSY:
        _overrun_in_step()  # an event-loop worker: a Task's step may be the one
        return
    elapsed = time.monotonic() - me.request_started
    if elapsed >= _timeout:
        raise RequestTimeout(f"the request ran for {elapsed:.2f} s, past --timeout {_timeout:g} s")


cdef bytes BODY_503 = b"503 Service Unavailable: the request timed out\n"


cdef void _answer_timeout(tf_conn *conn, Request request, bint inline=True) noexcept:
    """Logs the timed-out request (method, path, duration) and answers 503."""
    if _answered:
        _log_handler_error(request)  # a streamed answer is under way: it is cut instead
        return
    elapsed = _timeout
    if inline and tf_sb_me != NULL:
        elapsed = time.monotonic() - tf_sb_me.request_started
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
    _attach_body(request, conn, body, body_len)
    request._version_minor = req.version_minor
    request.worker_id = _worker_id
    if _threads > 1:
        return _defer(conn, request)
    global _answered
    _answered = False
    try:
        _respond(conn, _handler(request))
    except RequestTimeout:
        # raised before the response was handed to C: nothing was sent yet
        _answer_timeout(conn, request)
    except HTTPError as exc:
        _answer_http_error(conn, request, exc)
    except ClientDisconnected:
        pass  # the client went away (mid-body, mid-answer): no one to answer, nothing to fix
    except BaseException:
        _log_handler_error(request)
        # the C loop answers 500 when nothing was sent; a half-sent answer closes
    if Py_REFCNT(request) > 1:
        # the handler kept the request: it must not point into a reused buffer
        try:
            request._detach()
        except BaseException:
            _log(f"worker {_worker_id}: a request kept past its handler could not be copied "
                 "out; its fields not read yet raise RuntimeError", True)
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


cdef int _run_http_worker(CConfig c) except -1:
    """Runs this worker's C loop with c (filled for this worker) until it stops."""
    cdef tf_worker_callbacks cb
    global _timeout
    _timeout = c.timeout
    if _timeout > 0:
        signal.signal(TF_TIMEOUT_SIGNAL, _on_timeout_signal)
    cb.release = _release_gil
    cb.acquire = _acquire_gil
    cb.on_request = _on_request
    cb.on_metrics = _on_metrics
    cb.on_complete = _on_complete
    cb.on_overrun = _on_overrun
    cb.on_pull = _on_pull
    cb.on_body = NULL  # no asynchronous body reader (tf_body_take) here
    cb.on_ws = NULL  # WebSocket mode only with the ASGI runner (_asgi_ws.pxi)
    cb.ctx = NULL
    if tf_accesslog_open(c.access_log, c.access_log_format) < 0:
        raise OSError(errno, f"cannot open the access log {os.fsdecode(c.access_log)!r}: "
                             f"{os.strerror(errno)}")
    if _is_async(_handler):
        try:
            return _run_async_worker(c, &cb)  # the event-loop runner (_asgi.pxi)
        finally:
            tf_accesslog_close()
    runners = _start_runners(c.worker.threads)
    try:
        return tf_worker_run(&c.worker, &cb)
    finally:
        _stop_runners(runners)
        tf_accesslog_close()
