# cython: language_level=3
# Declarations of the load generator (csrc/loadgen.c) for _bench.pyx. Extern only: no code here.
from libc.stdint cimport uint64_t


cdef extern from "tailfast.h" nogil:
    int TF_LOAD_ERR_CONNECT
    int TF_LOAD_ERR_READ
    int TF_LOAD_ERR_WRITE
    int TF_LOAD_ERR_TIMEOUT
    int TF_LOAD_ERR_STATUS
    enum: TF_LOAD_NUM_ERRORS
    enum: TF_LOAD_HIST_BUCKETS

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
        uint64_t errors[TF_LOAD_NUM_ERRORS]
        uint64_t latency_min_ns
        uint64_t latency_max_ns
        uint64_t latency_sum_ns
        double elapsed
        uint64_t hist[TF_LOAD_HIST_BUCKETS]

    int tf_load_run(const tf_load_config *cfg, tf_load_result *out)
    size_t tf_load_hist_index(uint64_t value)
    uint64_t tf_load_hist_value(size_t index)
    uint64_t tf_load_percentile(const tf_load_result *res, double q)
