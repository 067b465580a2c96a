# Benchmark entry for the request parser (bench/test_parser.py): the parser is
# C with no Python binding of its own, and a Python call per parse would cost
# more than the parse, so the loop and its clock are here, in C. Included by
# _bench.pyx.

from tailfast._tf cimport tf_limits, tf_parse_request, tf_request

from tailfast.config import default_config


cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    clockid_t CLOCK_MONOTONIC
    int clock_gettime(clockid_t clock, timespec *ts)


_parse_limits = None


def parse_request_loop(bytes data, Py_ssize_t n):
    """Parses data (one complete request head) n times with the default limits;
    returns (elapsed ns for the n parses, number of headers found). Raises
    ValueError when data is not exactly one complete, valid head."""
    cdef tf_limits limits
    cdef tf_request req
    cdef int status = 0
    cdef ssize_t consumed = 0
    cdef Py_ssize_t i
    cdef timespec t0, t1
    cdef const char *buf = PyBytes_AS_STRING(data)
    cdef size_t length = <size_t>PyBytes_GET_SIZE(data)
    if n < 1:
        raise ValueError("n must be at least 1")
    global _parse_limits
    if _parse_limits is None:
        # the limits a server runs with unless told otherwise, read once:
        # default_config() costs far more than a parse (it reads the cgroup's
        # CPU files), and a per-call figure must not include it
        defaults = default_config()
        _parse_limits = (defaults.limit_request_line, defaults.limit_request_fields,
                         defaults.limit_request_field_size)
    limits.max_request_line, limits.max_header_count, limits.max_header_field = _parse_limits
    with nogil:
        clock_gettime(CLOCK_MONOTONIC, &t0)
        for i in range(n):
            consumed = tf_parse_request(buf, length, &limits, &req, &status)
            if consumed != <ssize_t>length:
                break
        clock_gettime(CLOCK_MONOTONIC, &t1)
    if consumed != <ssize_t>length:
        raise ValueError(f"parse returned {consumed} (status {status}) for {length} bytes")
    elapsed = (t1.tv_sec - t0.tv_sec) * 1_000_000_000 + (t1.tv_nsec - t0.tv_nsec)
    return elapsed, req.num_headers
