# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The one place where Python meets tailfast's C core.

The C supervisor forks the workers; each worker runs the C epoll loop, which
calls back here once per complete request with the GIL held. Request fields
become Python objects only when the handler reads them; the response head is
built in C.

One concern per include, in this order: _response.pxi (Response types, the
return value mapped to a response), _request.pxi (the lazy Request view),
_settings.pxi (a Config into the C config structs), _worker.pxi (GIL
callbacks, on_request, the worker loop's entry), _primary.pxi (fork
callbacks, run_primary, spawn_workers), _scoreboard.pxi (the scoreboard as
dicts), _wsgi.pxi (PEP 3333), _threads.pxi (--threads), _asgi.pxi (ASGI
and async handlers on an event loop).
"""

import inspect
import mimetypes
import os
import random
import signal
import stat
import sys
import threading
import time
import traceback
from io import BytesIO

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.errno cimport EBADMSG, EINTR, EMSGSIZE, ETIMEDOUT, errno
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp


cdef extern from "<strings.h>" nogil:
    int strncasecmp(const char *a, const char *b, size_t n)

from tailfast._tf cimport (
    TF_EXIT_FATAL,
    TF_LATENCY_BUCKETS,
    TF_LOG_COMBINED,
    TF_LOG_COMMON,
    tf_accesslog_close,
    tf_accesslog_open,
    tf_latency_bounds,
    tf_sb_stats,
    TF_TIMEOUT_SIGNAL,
    TF_ACCEPT_ARMED,
    TF_ACCEPT_OFF,
    TF_ACCEPT_WAITING,
    TF_CAUSE_COUNT,
    TF_CAUSE_CRASH,
    TF_CAUSE_MAX_REQUESTS,
    TF_CAUSE_MAX_RSS,
    TF_CAUSE_ROLLING,
    TF_PAUSE_COUNT,
    TF_PAUSE_EMFILE,
    TF_PAUSE_FAIR_SHARE,
    TF_PAUSE_MAX_CONNECTIONS,
    TF_SLOT_BACKOFF,
    TF_SLOT_RUNNING,
    TF_SLOT_UNUSED,
    TF_W_BUSY,
    TF_W_DRAINING,
    TF_W_FREE,
    TF_W_IDLE,
    TF_W_STARTING,
    tf_conn,
    tf_conn_defer,
    tf_body,
    tf_conn_body,
    tf_body_wait,
    tf_body_take,
    tf_body_consume,
    tf_body_read,
    TF_BODY_AGAIN,
    tf_conn_peer,
    tf_conn_pull,
    TF_DEFERRED,
    tf_job,
    tf_runq_push,
    tf_runq_next,
    tf_runq_poll,
    tf_runq_stop,
    tf_conn_respond,
    tf_conn_respond_end,
    tf_conn_respond_start,
    tf_conn_sendfile,
    tf_conn_write_body,
    tf_header,
    tf_request,
    tf_signals_unblock_all,
    TF_SB_MAX_PROCS,
    TF_SB_MAX_WORKERS,
    tf_sb,
    tf_sb_me,
    tf_sb_proc,
    tf_sb_slot,
    tf_scoreboard,
    tf_scoreboard_close,
    tf_scoreboard_create,
    tf_scoreboard_destroy,
    tf_scoreboard_open,
    tf_supervise,
    tf_supervisor_callbacks,
    tf_supervisor_config,
    tf_worker_callbacks,
    tf_worker_config,
    tf_worker_run,
)

from tailfast import proxy as _proxy
from tailfast.errors import (
    BadRequest,
    BodyTimeout,
    ClientDisconnected,
    HTTPError,
    PayloadTooLarge,
    RequestTimeout,
)
from tailfast.headers import Headers, QueryParams

try:
    import orjson as _orjson
except ImportError:  # optional: the stdlib does the same, slower
    _orjson = None
import json as _json


cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyEval_SaveThread()
    void PyEval_RestoreThread(PyThreadState *state)
    void PyOS_BeforeFork()
    void PyOS_AfterFork_Parent()
    void PyOS_AfterFork_Child()
    Py_ssize_t Py_REFCNT(object o)
    int PyThreadState_SetAsyncExc(unsigned long id, PyObject *exc)
    int _PyBytes_Resize(PyObject **string, Py_ssize_t newsize) except -1


# ------------------------------------------------------------------- state

cdef object _worker_id = None      # 1..N in a worker, None in the primary
cdef PyThreadState *_saved_thread = NULL


def get_worker_id():
    """The worker's id (1..N) in a worker process, None in the primary."""
    return _worker_id


def is_primary():
    """True unless this process is a tailfast worker."""
    return _worker_id is None


include "_response.pxi"
include "_request.pxi"
include "_settings.pxi"
include "_worker.pxi"
include "_primary.pxi"
include "_scoreboard.pxi"
include "_wsgi.pxi"
include "_threads.pxi"
include "_asgi.pxi"
include "_asgi_ws.pxi"

