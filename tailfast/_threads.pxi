# --threads: requests run on runner threads while the C loop goes on; answers applied on the loop.
# Included by _core.pyx.
#
# A request travels as its own Request object: its tf_job (a C struct inside
# it) goes loop -> run queue -> a runner -> completion queue -> loop, with one
# reference held by the job. Runners never touch the connection: the result
# (or the exception) is stored on the Request and the loop answers with the
# same _respond as the inline path. Pipelined input, body and head stay in
# the parked connection's buffer until then (csrc/serve.c).


cdef int _threads = 1  # --threads in this worker


cdef int _defer(tf_conn *conn, Request request) noexcept:
    """on_request with --threads: hands the request to a runner; TF_DEFERRED."""
    Py_INCREF(request)  # the job's reference, dropped in _on_complete
    request._job.data = <void *>request
    tf_conn_defer(conn, &request._job)
    tf_runq_push(&request._job)
    return TF_DEFERRED


cdef object _run_handler(Request request):
    """The handler's part that runs on a runner: all of a native handler; a
    WSGI application's call (its body is iterated and sent by the loop)."""
    if type(_handler) is WSGIHandler:
        return (<WSGIHandler>_handler)._run_app(request)
    return _handler(request)


def _runner():
    """A runner thread: takes requests until the queue stops."""
    cdef tf_job *job = NULL
    cdef tf_job *done = NULL
    cdef Request request
    cdef unsigned long ident = threading.get_ident()
    while True:
        # hands back the last answer and takes the next: with the GIL kept
        # while jobs are queued (fast handlers cost no GIL hand-off each),
        # released to sleep when none is
        job = tf_runq_poll(done)
        if job == NULL:
            with nogil:
                job = tf_runq_next(NULL)
            if job == NULL:
                return
        done = NULL
        request = <Request>job.data
        request._thread = ident
        request._running = True
        try:
            request._result = _run_handler(request)
        except BaseException as exc:
            request._error = exc
        # no Python code between the handler's end and these two lines: a
        # timeout the loop raised too late is dropped, not left for the next request
        request._running = False
        PyThreadState_SetAsyncExc(ident, NULL)
        request = None  # the loop holds the last reference once done
        done = job


cdef int _on_complete(void *ctx, tf_job *job, int alive) noexcept:
    """The loop: a runner finished job's request; answers it (alive) or drops it."""
    cdef Request request = <Request>job.data
    Py_DECREF(request)  # the job's reference; `request` holds its own
    result, error = request._result, request._error
    request._result = request._error = None
    global _answered
    _answered = False
    try:
        if not alive:
            if type(result) is _Exchange:
                (<_Exchange>result).discard()
            elif _is_stream(result):
                _close_iterable(result)
            return 0
        if error is not None:
            raise error
        if type(result) is _Exchange:
            (<_Exchange>result).answer()
        else:
            _respond(job.conn, result)
    except RequestTimeout:
        _answer_timeout(job.conn, request, False)
    except HTTPError as exc:
        _answer_http_error(job.conn, request, exc)
    except ClientDisconnected:
        pass  # the client went away (mid-body): no one to answer, nothing to fix
    except BaseException:
        _log_handler_error(request)
    finally:
        error = result = None  # no cycle through the traceback; the exchange holds request
    if Py_REFCNT(request) > 1:
        try:
            request._detach()  # the handler kept it: the buffer is reused next
        except BaseException:
            pass
    return 0


cdef void _on_overrun(void *ctx, tf_job *job) noexcept:
    """The loop: a request on a runner ran past --timeout: RequestTimeout is
    raised in that thread at its next Python instruction (a thread blocked in
    C gets it on return; the primary kills the worker after --timeout-grace)."""
    cdef Request request = <Request>job.data
    if not request._running:
        return  # finished: its answer is on the way
    _log(f"worker {_worker_id} (pid {os.getpid()}): {_describe(request)} ran past "
         f"--timeout {_timeout:g} s on a runner thread; raising RequestTimeout in it")
    PyThreadState_SetAsyncExc(request._thread, <PyObject *>RequestTimeout)


cdef list _start_runners(int threads):
    """Starts the worker's runner threads (none for 1: requests run inline)."""
    global _threads
    _threads = threads
    cdef list runners = []
    if threads <= 1:
        return runners
    if type(_handler) is WSGIHandler:
        (<WSGIHandler>_handler).base["wsgi.multithread"] = True
    for i in range(threads):
        t = threading.Thread(target=_runner, name=f"tailfast-runner-{i + 1}", daemon=True)
        t.start()
        runners.append(t)
    return runners


cdef void _stop_runners(list runners) noexcept:
    """The loop ended (every request in flight answered, or the stop was
    immediate): runners blocked on the queue return; one still in a handler
    is a daemon thread and ends with the process."""
    if not runners:
        return
    with nogil:
        tf_runq_stop()
    try:
        deadline = time.monotonic() + 1.0  # for all of them: a stuck one is not waited for
        for t in runners:
            t.join(max(0.0, deadline - time.monotonic()))
    except BaseException:
        pass
