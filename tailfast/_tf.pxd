# cython: language_level=3
# Declarations of the C core (csrc/tailfast.h). Extern only: no code here.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.time cimport time_t


cdef extern from "tailfast.h" nogil:
    # enum: compile-time constants, so that array sizes below name the macro
    enum: TF_MAX_HEADERS
    int TF_EXIT_FATAL
    int TF_TIMEOUT_SIGNAL

    ctypedef struct tf_header:
        const char *name
        size_t name_len
        const char *value
        size_t value_len

    ctypedef struct tf_request:
        const char *method
        size_t method_len
        const char *target
        size_t target_len
        const char *path
        size_t path_len
        const char *query
        size_t query_len
        int version_minor
        size_t num_headers
        tf_header headers[TF_MAX_HEADERS]
        int64_t content_length
        int chunked
        int keep_alive
        int expect_continue
        int is_head

    ctypedef struct tf_limits:
        size_t max_request_line
        size_t max_header_count
        size_t max_header_field

    ssize_t tf_parse_request(const char *buf, size_t len, const tf_limits *limits,
                             tf_request *req, int *error_status)
    void tf_log(const char *fmt, ...)
    void tf_log_set_level(int level)

    ctypedef struct tf_conn:
        pass

    enum: TF_DEFERRED

    ctypedef struct tf_job:
        tf_job *next
        tf_conn *conn
        void *data

    ctypedef struct tf_worker_callbacks:
        void (*release)(void *ctx) noexcept
        void (*acquire)(void *ctx) noexcept
        int (*on_request)(void *ctx, tf_conn *conn, const tf_request *req,
                          const char *body, size_t body_len) noexcept
        void *ctx
        int (*on_metrics)(void *ctx, tf_conn *conn) noexcept
        int (*on_complete)(void *ctx, tf_job *job, int alive) noexcept
        void (*on_overrun)(void *ctx, tf_job *job) noexcept
        int (*on_pull)(void *ctx, tf_conn *conn, void *source, int abort) noexcept
        void (*on_body)(void *ctx, tf_job *job) noexcept
        int (*on_ws)(void *ctx, tf_conn *conn, void *handle, int kind, int code,
                     const char *data, size_t len) noexcept

    enum:
        TF_WS_MESSAGE
        TF_WS_WRITABLE
        TF_WS_CLOSED
    int tf_ws_conn_accept(tf_conn *c, const tf_header *headers, size_t num_headers, void *handle)
    int tf_ws_conn_send(tf_conn *c, int opcode, const char *data, size_t len)
    int tf_ws_conn_close(tf_conn *c, int code, const char *reason, size_t len)
    void tf_ws_conn_resume(tf_conn *c)

    ctypedef struct tf_worker_config:
        int listen_fd
        int worker_id
        int max_connections
        int accepts_per_wakeup
        double keepalive_timeout
        double header_timeout
        double body_timeout
        double request_timeout
        int64_t max_body_size
        int64_t ws_max_message_size
        double ws_ping_interval
        tf_limits limits
        uint64_t max_requests
        int balance
        const char *health_path
        const char *ready_path
        const char *metrics_path
        int threads
        double timeout

    int tf_worker_run(const tf_worker_config *cfg, const tf_worker_callbacks *cb)
    int tf_worker_open(const tf_worker_config *cfg, const tf_worker_callbacks *cb, int *fd)
    int tf_worker_tick(double *next)
    int tf_worker_close()
    int tf_worker_tick_wait(double wait, double *next)
    int tf_worker_watch(int fd)
    void tf_job_finish(tf_job *job)
    size_t tf_conn_queued(const tf_conn *conn)
    int tf_conn_gone(const tf_conn *conn)
    int tf_conn_watch_output(tf_conn *conn)
    int tf_conn_respond(tf_conn *conn, int status, const tf_header *headers,
                        size_t num_headers, const char *body, size_t body_len,
                        int close_after)
    int tf_conn_respond_start(tf_conn *conn, int status, const tf_header *headers,
                              size_t num_headers, int64_t content_length, int close_after)
    int tf_conn_write_body(tf_conn *conn, const char *data, size_t len)
    int tf_conn_sendfile(tf_conn *conn, int fd, int64_t offset, int64_t count)
    int tf_conn_respond_end(tf_conn *conn, int complete)
    int tf_conn_peer(const tf_conn *conn, char *host, size_t host_cap, int *port)
    void tf_conn_defer(tf_conn *conn, tf_job *job)
    ctypedef struct tf_body:
        pass
    enum: TF_BODY_WINDOW
    enum: TF_BODY_AGAIN
    tf_body *tf_conn_body(tf_conn *conn)
    int tf_body_wait(tf_body *body)
    ssize_t tf_body_take(tf_body *body, const char **data)
    void tf_body_consume(tf_body *body, size_t n)
    ssize_t tf_body_read(tf_body *body, char *buf, size_t cap)
    void tf_conn_pull(tf_conn *conn, void *source)
    void tf_runq_push(tf_job *job)
    tf_job *tf_runq_take() nogil
    void tf_job_done(tf_job *job) nogil
    void tf_runq_stop() nogil
    tf_job *tf_runq_next(tf_job *done) nogil
    tf_job *tf_runq_poll(tf_job *done)

    ctypedef struct tf_supervisor_config:
        int workers
        double graceful_timeout
        int http
        int listen_fd
        uint64_t max_rss
        double boot_timeout
        double timeout
        double timeout_grace
        double shutdown_delay
        int stop_filter
        const char *notify_socket

    ctypedef struct tf_supervisor_callbacks:
        void (*release)(void *ctx) noexcept
        void (*acquire)(void *ctx) noexcept
        void (*before_fork)(void *ctx) noexcept
        void (*after_fork_parent)(void *ctx) noexcept
        int (*child_main)(void *ctx, int worker_id) noexcept
        int (*before_roll)(void *ctx, tf_supervisor_config *cfg) noexcept
        void *ctx

    int tf_supervise(const tf_supervisor_config *cfg, const tf_supervisor_callbacks *cb)
    int tf_signals_unblock_all()

    enum: TF_SB_MAX_WORKERS
    enum: TF_SB_MAX_PROCS
    int TF_W_FREE, TF_W_STARTING, TF_W_IDLE, TF_W_BUSY, TF_W_DRAINING
    int TF_SLOT_UNUSED, TF_SLOT_RUNNING, TF_SLOT_BACKOFF

    enum: TF_LATENCY_BUCKETS
    const double tf_latency_bounds[TF_LATENCY_BUCKETS - 1]
    int TF_CAUSE_CRASH, TF_CAUSE_ROLLING, TF_CAUSE_MAX_REQUESTS, TF_CAUSE_MAX_RSS
    enum: TF_CAUSE_COUNT
    int TF_ACCEPT_OFF, TF_ACCEPT_ARMED, TF_ACCEPT_WAITING
    int TF_PAUSE_FAIR_SHARE, TF_PAUSE_EMFILE, TF_PAUSE_MAX_CONNECTIONS
    enum: TF_PAUSE_COUNT

    ctypedef struct tf_sb_stats:
        uint64_t status[5]
        uint64_t latency[TF_LATENCY_BUCKETS]
        double latency_sum

    ctypedef struct tf_sb_proc:
        int32_t pid
        int32_t worker_id
        uint32_t generation
        int32_t state
        uint64_t requests
        uint64_t accepted
        int32_t open
        int32_t retire
        double started
        double heartbeat
        double request_started
        uint64_t rss
        int32_t in_flight
        int32_t threads_busy
        int32_t threads_waiting
        int32_t threads
        double in_flight_started
        char method[16]
        char path[112]
        tf_sb_stats stats
        int32_t accepting
        uint64_t pauses[TF_PAUSE_COUNT]
        uint64_t loop_stalls

    ctypedef struct tf_sb_slot:
        int32_t state
        int32_t pid
        uint32_t restarts
        uint32_t crashes
        double next_attempt
        uint64_t retired_requests
        tf_sb_stats retired
        uint64_t retired_pauses[TF_PAUSE_COUNT]
        uint64_t retired_loop_stalls

    ctypedef struct tf_scoreboard:
        uint64_t magic
        uint32_t version
        uint32_t max_procs
        int32_t primary_pid
        int32_t workers
        uint32_t generation
        int32_t procs_hw
        int32_t queue_depth
        int32_t queue_max
        double started
        char listen[128]
        int32_t stopping
        uint64_t restarts_by_cause[TF_CAUSE_COUNT]
        tf_sb_slot slots[TF_SB_MAX_WORKERS + 1]
        tf_sb_proc procs[TF_SB_MAX_PROCS]

    tf_scoreboard *tf_sb
    tf_sb_proc *tf_sb_me
    int tf_scoreboard_create(const char *path, int workers, const char *listen)
    void tf_scoreboard_destroy(const char *path)
    const tf_scoreboard *tf_scoreboard_open(const char *path)
    void tf_scoreboard_close(const tf_scoreboard *sb)
    void tf_scoreboard_count_stall() nogil

    int TF_LOG_COMMON, TF_LOG_COMBINED
    int tf_accesslog_open(const char *path, int format)
    void tf_accesslog_close()


cdef extern from "websocket.h" nogil:
    ctypedef struct tf_ws_token:
        const char *s
        size_t len
    int tf_ws_is_upgrade(const tf_request *req)
    int tf_ws_handshake(const tf_request *req, char *accept, const char **why)
    ssize_t tf_ws_subprotocols(const tf_request *req, tf_ws_token *out, size_t cap)
    int tf_ws_close_code_valid(int code)
