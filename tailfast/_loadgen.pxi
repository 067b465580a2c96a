# Included at the end of _core.pyx: the Python face of csrc/loadgen.c.
from libc.errno cimport errno
from libc.stdlib cimport free as _lg_free, malloc as _lg_malloc

from tailfast._tf cimport (
    TF_LOAD_ERR_CONNECT,
    TF_LOAD_ERR_READ,
    TF_LOAD_ERR_STATUS,
    TF_LOAD_ERR_TIMEOUT,
    TF_LOAD_ERR_WRITE,
    TF_LOAD_HIST_BUCKETS,
    TF_LOAD_NUM_ERRORS,
    tf_load_config,
    tf_load_hist_index,
    tf_load_hist_value,
    tf_load_percentile,
    tf_load_result,
    tf_load_run,
)

# tf_load_result.errors index -> its name in the result dict
LOAD_ERROR_KINDS = {TF_LOAD_ERR_CONNECT: "connect", TF_LOAD_ERR_READ: "read",
                    TF_LOAD_ERR_WRITE: "write", TF_LOAD_ERR_TIMEOUT: "timeout",
                    TF_LOAD_ERR_STATUS: "status"}
LOAD_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def run_load(str host, str port, bytes request, int connections=10, int threads=1,
             int pipeline=1, double duration=10.0, double timeout=2.0,
             bint close_each=False, bint head=False):
    """Sends request (complete HTTP/1.1 bytes) over `connections` connections
    on `threads` C threads for `duration` seconds, with the GIL released.
    Returns a dict of counts, latencies in nanoseconds and errors by kind;
    raises OSError when the load cannot run at all (bad address, no fds)."""
    cdef tf_load_config cfg
    # The result holds the histogram (15 KiB): on the heap, not the stack.
    cdef tf_load_result *res = <tf_load_result *>_lg_malloc(sizeof(tf_load_result))
    cdef int rc
    cdef bytes host_b = host.encode("idna" if not host.isascii() else "ascii")
    cdef bytes port_b = port.encode("ascii")
    if res == NULL:
        raise MemoryError()
    cfg.host = host_b
    cfg.port = port_b
    cfg.request = request
    cfg.request_len = len(request)
    cfg.connections = connections
    cfg.threads = threads
    cfg.pipeline = pipeline
    cfg.duration = duration
    cfg.timeout = timeout
    cfg.close_each = close_each
    cfg.head = head
    try:
        with nogil:
            rc = tf_load_run(&cfg, res)
        if rc < 0:
            err = _lg_errno()
            import os as _os
            raise OSError(err, f"load generator: {_os.strerror(err)}")
        return _load_result_dict(res)
    finally:
        _lg_free(res)


cdef int _lg_errno() noexcept:
    return errno


cdef dict _load_result_dict(const tf_load_result *res):
    cdef size_t i
    cdef size_t nbuckets = TF_LOAD_HIST_BUCKETS
    latency = {
        "min": res.latency_min_ns,
        "mean": (res.latency_sum_ns // res.requests) if res.requests else 0,
        "max": res.latency_max_ns,
    }
    for q in LOAD_PERCENTILES:
        latency[f"p{q:g}"] = tf_load_percentile(res, q)
    # Non-empty buckets as [midpoint_ns, count]: enough to merge runs.
    hist = [[tf_load_hist_value(i), res.hist[i]]
            for i in range(nbuckets) if res.hist[i]]
    return {
        "requests": res.requests,
        "elapsed": res.elapsed,
        "bytes_read": res.bytes_read,
        "connects": res.connects,
        "status": {f"{k}xx": res.status_classes[k] for k in range(1, 6)},
        "errors": {LOAD_ERROR_KINDS[k]: res.errors[k] for k in range(TF_LOAD_NUM_ERRORS)},
        "latency_ns": latency,
        "histogram": hist,
    }


def load_hist_bucket(unsigned long long value):
    """(bucket index, bucket midpoint) of a latency in ns: for tests of the histogram."""
    cdef size_t i = tf_load_hist_index(value)
    return i, tf_load_hist_value(i)
