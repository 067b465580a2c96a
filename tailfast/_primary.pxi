# The primary's side: fork callbacks, the supervisor's entry (run_primary) and spawn_workers.
# Included by _core.pyx.


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
