# cython: language_level=3
# Declarations of the C core (csrc/tailfast.h). Extern only: no code here.
from libc.stdint cimport int64_t
from libc.time cimport time_t


cdef extern from "tailfast.h" nogil:
    int TF_MAX_HEADERS
    int TF_EXIT_FATAL

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
        tf_header headers[100]
        int64_t content_length
        int chunked
        int keep_alive
        int expect_continue
        int is_head

    ctypedef struct tf_limits:
        size_t max_request_line
        size_t max_header_count
        size_t max_header_field

    void tf_limits_default(tf_limits *limits)
    void tf_log(const char *fmt, ...)

    ctypedef struct tf_conn:
        pass

    ctypedef struct tf_worker_callbacks:
        void (*release)(void *ctx) noexcept
        void (*acquire)(void *ctx) noexcept
        int (*on_request)(void *ctx, tf_conn *conn, const tf_request *req,
                          const char *body, size_t body_len) noexcept
        void *ctx

    ctypedef struct tf_worker_config:
        int listen_fd
        int worker_id
        int max_connections
        int accepts_per_wakeup
        double keepalive_timeout
        double request_timeout
        int64_t max_body_size
        tf_limits limits

    void tf_worker_config_default(tf_worker_config *cfg)
    int tf_worker_run(const tf_worker_config *cfg, const tf_worker_callbacks *cb)
    int tf_conn_respond(tf_conn *conn, int status, const tf_header *headers,
                        size_t num_headers, const char *body, size_t body_len,
                        int close_after)
    int tf_conn_peer(const tf_conn *conn, char *host, size_t host_cap, int *port)

    ctypedef struct tf_supervisor_callbacks:
        void (*release)(void *ctx) noexcept
        void (*acquire)(void *ctx) noexcept
        void (*before_fork)(void *ctx) noexcept
        void (*after_fork_parent)(void *ctx) noexcept
        int (*child_main)(void *ctx, int worker_id) noexcept
        void *ctx

    ctypedef struct tf_supervisor_config:
        int workers
        double graceful_timeout
        int http

    int tf_supervise(const tf_supervisor_config *cfg, const tf_supervisor_callbacks *cb)
    int tf_signals_unblock_all()

# ---------------------------------------------------- load generator (csrc/loadgen.c)
from libc.stdint cimport uint64_t


cdef extern from "tailfast.h" nogil:
    int TF_LOAD_ERR_CONNECT
    int TF_LOAD_ERR_READ
    int TF_LOAD_ERR_WRITE
    int TF_LOAD_ERR_TIMEOUT
    int TF_LOAD_ERR_STATUS
    int TF_LOAD_NUM_ERRORS
    int TF_LOAD_HIST_BUCKETS

    ctypedef struct tf_load_config:
        const char *host
        const char *port
        const char *request
        size_t request_len
        int connections
        int threads
        int pipeline
        double duration
        double timeout
        int close_each
        int head

    ctypedef struct tf_load_result:
        uint64_t requests
        uint64_t status_classes[6]
        uint64_t bytes_read
        uint64_t connects
        uint64_t errors[5]
        uint64_t latency_min_ns
        uint64_t latency_max_ns
        uint64_t latency_sum_ns
        double elapsed
        uint64_t hist[1920]

    int tf_load_run(const tf_load_config *cfg, tf_load_result *out)
    size_t tf_load_hist_index(uint64_t value)
    uint64_t tf_load_hist_value(size_t index)
    uint64_t tf_load_percentile(const tf_load_result *res, double q)
