# The primary's side: fork callbacks, the supervisor's entry (run_primary) and spawn_workers.
# Included by _core.pyx.


cdef object _child_target = None   # run(worker_id) -> exit status, in each worker
# SIGHUP's re-read (run_primary): () -> the Config for the next generation, or None to keep
# the one in force; None here: a SIGHUP rolls with the configuration in force.
cdef object _reconfigure = None
cdef object _config = None         # the Config of the workers forked from now on
cdef object _launch = None         # tailfast.server.Launch: what the primary knows at start


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


cdef int _before_roll(void *ctx, tf_supervisor_config *cfg) noexcept:
    """SIGHUP, before the roll: the configuration re-read (_reconfigure, which
    reports a bad value itself) becomes the one workers are forked with, and
    its supervisor values go to C. -1: keep the configuration and workers."""
    global _config
    cdef CConfig c
    cdef const char *notify = cfg.notify_socket
    try:
        new = _reconfigure()
        if new is None:
            return -1
        c = _fill_c_config(new, _launch)
    except BaseException:
        _log("SIGHUP: cannot apply the re-read configuration; the current one keeps "
             "serving (no roll)", True)
        return -1
    _config = new
    tf_log_set_level(c.log_level)  # the primary's C log lines, and the workers' it forks
    cfg[0] = c.supervisor
    cfg.notify_socket = notify  # C keeps its own; this one points into c, freed on return
    return 0


cdef int _supervise(CConfig c) except -1:
    cdef tf_supervisor_callbacks cb
    cb.release = _release_gil
    cb.acquire = _acquire_gil
    cb.before_fork = _before_fork
    cb.after_fork_parent = _after_fork_parent
    cb.child_main = _child_main
    cb.before_roll = NULL
    if _reconfigure is not None:
        cb.before_roll = _before_roll
    cb.ctx = NULL
    return tf_supervise(&c.supervisor, &cb)


cdef object _load_in_worker(int worker_id, object reload, bint preload):
    """The application as it is on disk now, (handler, start hook, exit hook),
    or the worker's exit status when it cannot be loaded."""
    first_load = not preload and (tf_sb_me == NULL or tf_sb_me.generation == 0)
    try:
        return reload()
    except BaseException as exc:
        if first_load:
            # "cannot start": at the server's first start the primary
            # stops; a respawn later backs off (supervisor_exit.c)
            details = getattr(exc, "details", "")  # the application's traceback
            _log(f"worker {worker_id}: {exc}" + (f"\n{details.rstrip()}" if details else ""))
            return TF_EXIT_FATAL
        _log(f"worker {worker_id} (pid {os.getpid()}): cannot load the application; "
             "the old workers keep serving", True)
        return 1


cdef bint _run_hook(object hook, int worker_id, str name):
    """Runs an --on-worker-* hook; False (and one log line) when it raised."""
    if hook is None:
        return True
    try:
        hook(worker_id)
    except BaseException:
        _log(f"worker {worker_id} (pid {os.getpid()}): {name} hook failed", True)
        return False
    return True


def run_primary(handler, config, launch, on_worker_start=None, reload=None, worker_setup=None,
                on_worker_exit=None, bint preload=True, reconfigure=None):
    """Forks config.workers HTTP workers serving handler on launch.listen_fd
    and supervises them until stopped. Returns the primary's exit status.
    config is a tailfast.config.Config, launch a tailfast.server.Launch.

    reload() -> (handler, on_worker_start, on_worker_exit) imports the
    application as it is on disk now; a worker calls it when it was forked
    after a SIGHUP, or always without preload (handler is then None).
    on_worker_start(worker_id) runs in each worker before it accepts, and
    on_worker_exit(worker_id) after it stopped serving. worker_setup(worker_id)
    -> fd or None runs in each worker first (e.g. its own SO_REUSEPORT socket).
    reconfigure() -> Config or None runs in the primary on SIGHUP, before the
    roll: the workers forked from then on get that Config (None: no roll)."""
    global _handler, _child_target, _reconfigure, _config, _launch
    _handler = handler
    _config, _launch, _reconfigure = config, launch, reconfigure

    def http_worker(int worker_id):
        global _handler
        start_hook, exit_hook = on_worker_start, on_worker_exit
        if reload is not None and (not preload or (tf_sb_me != NULL and tf_sb_me.generation > 0)):
            loaded = _load_in_worker(worker_id, reload, preload)
            if type(loaded) is int:
                return loaded
            _handler, start_hook, exit_hook = loaded
        if not _run_hook(start_hook, worker_id, "on-worker-start"):
            return 1
        own_fd = worker_setup(worker_id) if worker_setup is not None else None
        status = _run_http_worker(
            _fill_c_config(_config, launch, worker_id, -1 if own_fd is None else own_fd))
        _run_hook(exit_hook, worker_id, "on-worker-exit")
        return status

    _child_target = http_worker
    cdef CConfig c = _fill_c_config(config, launch)
    tf_log_set_level(c.log_level)  # before any fork: the workers inherit it
    cdef bytes path_b = c.scoreboard_path
    cdef const char *path_c = <const char *>path_b if path_b is not None else NULL
    if tf_scoreboard_create(path_c, c.supervisor.workers, c.listen_url) < 0:
        raise OSError(errno, f"cannot create the scoreboard {launch.scoreboard_path!r}: "
                             f"{os.strerror(errno)}")
    try:
        return _supervise(c)
    finally:
        # only the primary gets here: workers leave through _exit
        tf_scoreboard_destroy(path_c)


def spawn_workers(int n, target, double graceful_timeout=30.0):
    """The cluster manager without HTTP: forks n workers running
    target(worker_id), respawns those that die, and returns the exit status
    once stopped by SIGTERM/SIGINT/SIGQUIT."""
    global _child_target, _reconfigure
    if not callable(target):
        raise TypeError("target must be callable")
    if n < 1:
        raise ValueError("n must be at least 1")

    def run_target(int worker_id):
        tf_signals_unblock_all()
        result = target(worker_id)
        return result if type(result) is int else 0

    _child_target = run_target
    _reconfigure = None  # nothing to re-read: a SIGHUP replaces the workers
    from dataclasses import replace
    from tailfast.config import default_config
    # no request timeout: these workers serve no requests
    config = replace(default_config(), workers=n, graceful_timeout=graceful_timeout, timeout=0.0)
    return _supervise(_fill_c_config(config, None))
