# Settings to C: the one function that fills the C config structs from a Config.
# Included by _core.pyx.
#
# Every value C reads comes from a row of tailfast/config.py's SETTINGS (its
# c_field names the struct field or call argument) or from what the primary
# knows at start (tailfast.server.Launch); each is converted here and nowhere
# else. The structs are zeroed first and every field is then assigned: there
# are no C defaults to fall back on. tests/test_settings_c.py checks the table,
# the fields assigned here and the structs in csrc/*.h against one another.

from libc.stdint cimport uint64_t
from libc.string cimport memset

from tailfast._tf cimport TF_CAUSE_COUNT, TF_MAX_HEADERS, TF_SB_MAX_WORKERS, tf_log_set_level

from tailfast import log as _pylog

# Fixed by design rather than set by a user; written here so that C needs no defaults.
DEF _ACCEPTS_PER_WAKEUP = 4  # connections a worker accepts per wake-up: spreads them fairly
DEF _BOOT_TIMEOUT = 60.0     # seconds a new worker may take to become ready

# What C reads that comes from the process's situation, not from a setting's c_field.
DERIVED_C_FIELDS = (
    "worker.listen_fd",             # the inherited socket, or the worker's own (reuseport)
    "worker.worker_id",
    "worker.accepts_per_wakeup",    # _ACCEPTS_PER_WAKEUP
    "worker.timeout",               # --timeout (supervisor.timeout): runner threads' overruns
    "supervisor.http",              # 1 for run_primary, 0 for spawn_workers
    "supervisor.listen_fd",         # the shared socket whose queue is sampled (-1: none)
    "supervisor.boot_timeout",      # _BOOT_TIMEOUT
    "supervisor.stop_filter",       # only a shared socket this server opened
    "supervisor.notify_socket",     # systemd's, from the primary's environment
    "tf_scoreboard_create.path",    # named after the primary's pid (None: anonymous)
    "tf_scoreboard_create.listen",  # the URL `tailfast status` shows
)

# C limits that Python code mirrors (config.py's MAX_WORKERS and
# MAX_HEADER_FIELDS, which must not import this module; metrics.py's
# STATUS_CLASSES; _scoreboard.pxi's _CAUSES): the tests compare them.
cdef tf_sb_stats _stats_shape
C_LIMITS = {
    "TF_SB_MAX_WORKERS": TF_SB_MAX_WORKERS,
    "TF_MAX_HEADERS": TF_MAX_HEADERS,
    "TF_CAUSE_COUNT": TF_CAUSE_COUNT,
    "status classes": sizeof(_stats_shape.status) // sizeof(_stats_shape.status[0]),
}


cdef class CConfig:
    """The C config structs filled from one Config (see _fill_c_config), and the
    bytes their strings point into, alive as long as this object."""

    cdef tf_worker_config worker
    cdef tf_supervisor_config supervisor
    cdef bytes _health_path, _ready_path, _metrics_path, _notify_socket
    # arguments of the C calls other than the two structs
    cdef readonly bytes access_log           # tf_accesslog_open.path (b"": no log)
    cdef readonly int access_log_format      # tf_accesslog_open.format: TF_LOG_COMMON/COMBINED
    cdef readonly bytes scoreboard_path      # tf_scoreboard_create.path (None: anonymous)
    cdef readonly bytes listen_url           # tf_scoreboard_create.listen
    cdef readonly int log_level              # tf_log_set_level.level (tailfast.log's numbers)
    # Python's own use in a worker
    cdef readonly double timeout             # --timeout, for RequestTimeout
    cdef readonly str loop                   # --loop: the event loop of the ASGI runner
    cdef readonly double loop_stall_warning  # --loop-stall-warning: its watchdog (0: off)


cdef inline const char *_c_str(bytes text):
    """NULL for an empty string (the C core's "off"), else the bytes' buffer."""
    return <const char *>text if text else NULL


cdef uint64_t _max_requests(object config) except? 0:
    """--max-requests plus this worker's random 0..--max-requests-jitter (0: never):
    workers started together are then not all replaced at once."""
    if config.max_requests <= 0:
        return 0
    jitter = config.max_requests_jitter
    return config.max_requests + (random.randint(0, jitter) if jitter > 0 else 0)


# Longer than a screen on purpose: one assignment per C field, all in one
# place, is what lets tests/test_settings_c.py check that none is missed.
cdef CConfig _fill_c_config(object config, object launch, int worker_id=0, int own_fd=-1):
    """Fills every field of the C config structs from config (tailfast.config.Config)
    and launch (tailfast.server.Launch; None for spawn_workers: no HTTP, no socket).
    worker_id is 0 in the primary; own_fd >= 0 is a worker's own SO_REUSEPORT socket.
    One assignment per C field, in struct order: longer than a screen so that
    every field is seen in one place."""
    cdef CConfig c = CConfig.__new__(CConfig)
    cdef tf_worker_config *w = &c.worker
    cdef tf_supervisor_config *s = &c.supervisor
    cdef int listen_fd = launch.listen_fd if launch is not None else -1
    cdef bint reuseport = config.balance == "reuseport"
    memset(w, 0, sizeof(c.worker))
    memset(s, 0, sizeof(c.supervisor))
    c._health_path = config.health_path.encode("utf-8")
    c._ready_path = config.ready_path.encode("utf-8")
    c._metrics_path = config.metrics_path.encode("utf-8")
    notify = launch.notify_socket if launch is not None else None
    c._notify_socket = os.fsencode(notify) if notify else b""

    w.listen_fd = own_fd if own_fd >= 0 else listen_fd
    w.worker_id = worker_id
    w.max_connections = config.max_connections
    w.accepts_per_wakeup = _ACCEPTS_PER_WAKEUP
    w.keepalive_timeout = config.keepalive_timeout
    w.header_timeout = config.header_timeout
    w.body_timeout = config.body_timeout
    w.request_timeout = config.request_timeout
    w.max_body_size = config.limit_request_body
    w.ws_max_message_size = config.ws_max_message_size
    w.ws_ping_interval = config.ws_ping_interval
    w.limits.max_request_line = config.limit_request_line
    w.limits.max_header_count = config.limit_request_fields
    w.limits.max_header_field = config.limit_request_field_size
    w.max_requests = _max_requests(config)
    w.balance = 0 if reuseport else 1  # the fair-share cap is for a shared socket
    w.health_path = _c_str(c._health_path)
    w.ready_path = _c_str(c._ready_path)
    w.metrics_path = _c_str(c._metrics_path)
    w.threads = config.threads
    w.timeout = config.timeout

    s.workers = config.workers
    s.graceful_timeout = config.graceful_timeout
    s.http = launch is not None
    # with reuseport the workers' sockets hold the queues: none to sample here
    s.listen_fd = -1 if reuseport else listen_fd
    s.max_rss = config.max_rss * 1024 * 1024  # MiB
    s.boot_timeout = _BOOT_TIMEOUT
    s.timeout = config.timeout
    s.timeout_grace = config.timeout_grace
    s.shutdown_delay = config.shutdown_delay
    # a socket we opened is ours to close to new connections on a stop; an
    # inherited one outlives us (its queue waits for the next instance)
    s.stop_filter = launch is not None and not launch.inherited and not reuseport
    s.notify_socket = _c_str(c._notify_socket)

    c.access_log = os.fsencode(config.access_log)
    c.access_log_format = TF_LOG_COMMON if config.access_log_format == "common" else TF_LOG_COMBINED
    path = launch.scoreboard_path if launch is not None else None
    c.scoreboard_path = os.fsencode(path) if path else None
    c.listen_url = (launch.listen_url if launch is not None else "").encode("utf-8", "replace")
    c.log_level = _pylog.LEVELS[config.log_level]
    c.timeout = config.timeout
    c.loop = config.loop
    c.loop_stall_warning = config.loop_stall_warning
    return c


cdef object _opt_str(const char *text):
    return None if text == NULL else (<bytes>text).decode("utf-8", "surrogateescape")


def c_config_fields(config, launch=None, int worker_id=0, int own_fd=-1):
    """{"worker.listen_fd": ..., "supervisor.workers": ..., "tf_accesslog_open.path":
    ...}: every field of the C config structs, and every argument of the other C
    calls, as _fill_c_config fills them from config and launch (for the tests
    and for debugging; strings as str, NULL as None)."""
    cdef CConfig c = _fill_c_config(config, launch, worker_id, own_fd)
    cdef tf_worker_config *w = &c.worker
    cdef tf_supervisor_config *s = &c.supervisor
    return {
        "worker.listen_fd": w.listen_fd,
        "worker.worker_id": w.worker_id,
        "worker.max_connections": w.max_connections,
        "worker.accepts_per_wakeup": w.accepts_per_wakeup,
        "worker.keepalive_timeout": w.keepalive_timeout,
        "worker.header_timeout": w.header_timeout,
        "worker.body_timeout": w.body_timeout,
        "worker.request_timeout": w.request_timeout,
        "worker.max_body_size": w.max_body_size,
        "worker.ws_max_message_size": w.ws_max_message_size,
        "worker.ws_ping_interval": w.ws_ping_interval,
        "worker.limits.max_request_line": w.limits.max_request_line,
        "worker.limits.max_header_count": w.limits.max_header_count,
        "worker.limits.max_header_field": w.limits.max_header_field,
        "worker.max_requests": w.max_requests,
        "worker.balance": w.balance,
        "worker.health_path": _opt_str(w.health_path),
        "worker.ready_path": _opt_str(w.ready_path),
        "worker.threads": w.threads,
        "worker.timeout": w.timeout,
        "worker.metrics_path": _opt_str(w.metrics_path),
        "supervisor.workers": s.workers,
        "supervisor.graceful_timeout": s.graceful_timeout,
        "supervisor.http": s.http,
        "supervisor.listen_fd": s.listen_fd,
        "supervisor.max_rss": s.max_rss,
        "supervisor.boot_timeout": s.boot_timeout,
        "supervisor.timeout": s.timeout,
        "supervisor.timeout_grace": s.timeout_grace,
        "supervisor.shutdown_delay": s.shutdown_delay,
        "supervisor.stop_filter": s.stop_filter,
        "supervisor.notify_socket": _opt_str(s.notify_socket),
        "tf_accesslog_open.path": os.fsdecode(c.access_log),
        "tf_accesslog_open.format": c.access_log_format,
        "tf_scoreboard_create.path": (None if c.scoreboard_path is None
                                      else os.fsdecode(c.scoreboard_path)),
        "tf_scoreboard_create.listen": c.listen_url.decode("utf-8"),
        "tf_log_set_level.level": c.log_level,
    }
