# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The benchmark extension: the load generator and the parser benchmark.

Kept apart from tailfast._core so that the server's extension carries no
bench code. One concern per include: _loadgen.pxi (csrc/loadgen.c, behind
`tailfast bench load`) and _parsebench.pxi (csrc/http.c's request parser in a
timed C loop). Declarations: _bench.pxd (the load generator) and _tf.pxd (the
parser).
"""

import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno
from libc.stdlib cimport free, malloc


include "_loadgen.pxi"
include "_parsebench.pxi"
