# The scoreboard (shared memory) read into plain Python dicts.
# Included by _core.pyx.

from tailfast._tf cimport tf_scoreboard_count_stall


_PROC_STATES = {TF_W_STARTING: "starting", TF_W_IDLE: "idle", TF_W_BUSY: "busy",
                TF_W_DRAINING: "draining"}
_SLOT_STATES = {TF_SLOT_UNUSED: "unused", TF_SLOT_RUNNING: "running",
                TF_SLOT_BACKOFF: "backoff"}
_CAUSES = {TF_CAUSE_CRASH: "crash", TF_CAUSE_ROLLING: "rolling_restart",
           TF_CAUSE_MAX_REQUESTS: "max_requests", TF_CAUSE_MAX_RSS: "max_rss"}
_ACCEPTING = {TF_ACCEPT_OFF: "off", TF_ACCEPT_ARMED: "armed", TF_ACCEPT_WAITING: "waiting"}
_PAUSES = {TF_PAUSE_FAIR_SHARE: "fair_share", TF_PAUSE_EMFILE: "emfile",
           TF_PAUSE_MAX_CONNECTIONS: "max_connections"}


cdef dict _pauses(const uint64_t *counts):
    """Times accepting paused, by reason."""
    cdef int i
    return {_PAUSES[i]: counts[i] for i in range(TF_PAUSE_COUNT)}


cdef str _cstr(const char *text):
    return (<bytes>text).decode("utf-8", "replace")


cdef inline int _status_classes(const tf_sb_stats *st):
    # 1xx..5xx: the header sizes this array without a macro
    return <int>(sizeof(st.status) // sizeof(st.status[0]))


cdef dict _stats(const tf_sb_stats *st):
    cdef int i
    return {
        "status": [st.status[i] for i in range(_status_classes(st))],
        "latency": [st.latency[i] for i in range(TF_LATENCY_BUCKETS)],
        "latency_sum": st.latency_sum,
    }


cdef dict _proc_dict(const tf_sb_proc *p, double mono, double wall):
    """One worker process's entry."""
    cdef bint busy = p.state == TF_W_BUSY
    return {
        "worker_id": p.worker_id,
        "pid": p.pid,
        "state": _PROC_STATES.get(p.state, "unknown"),
        "ready": p.state == TF_W_IDLE or p.state == TF_W_BUSY,
        "generation": p.generation,
        "requests": p.requests,
        "accepted": p.accepted,
        "open": p.open,
        "accepting": _ACCEPTING.get(p.accepting, "unknown"),
        "accept_pauses": _pauses(p.pauses),
        "loop_stalls": p.loop_stalls,  # event-loop stalls past --loop-stall-warning
        "uptime": round(wall - p.started, 3) if p.started > 0 else 0.0,
        "heartbeat_age": round(mono - p.heartbeat, 3) if p.heartbeat > 0 else None,
        "request": f"{_cstr(p.method)} {_cstr(p.path)}" if busy else None,
        "request_age": round(mono - p.request_started, 3) if busy else None,
        "rss": p.rss,
        "retire": bool(p.retire),
        # --threads: requests handed to runner threads (in flight), those
        # running on one (busy threads) and those queued for one (waiting)
        "threads": p.threads,
        "in_flight": p.in_flight,
        "threads_busy": p.threads_busy,
        "threads_waiting": p.threads_waiting,
        "in_flight_age": round(mono - p.in_flight_started, 3) if p.in_flight_started > 0 else None,
        "stats": _stats(&p.stats),
    }


cdef dict _slot_dict(int worker_id, const tf_sb_slot *sl, double wall):
    """One worker id's slot."""
    return {
        "worker_id": worker_id,
        "state": _SLOT_STATES.get(sl.state, "unknown"),
        "pid": sl.pid,
        "restarts": sl.restarts,
        "crashes": sl.crashes,
        "next_attempt_in": (round(max(0.0, sl.next_attempt - wall), 3)
                            if sl.state == TF_SLOT_BACKOFF else None),
    }


cdef dict _snapshot(const tf_scoreboard *sb):
    """The scoreboard sb as plain Python values."""
    cdef int i
    cdef const tf_sb_slot *sl
    cdef double mono = time.monotonic()
    cdef double wall = time.time()
    procs = [_proc_dict(&sb.procs[i], mono, wall)
             for i in range(min(sb.procs_hw, TF_SB_MAX_PROCS))
             if sb.procs[i].state != TF_W_FREE and sb.procs[i].pid > 0]
    slots = []
    retired = []
    for i in range(1, TF_SB_MAX_WORKERS + 1):
        sl = &sb.slots[i]
        if i <= min(sb.workers, TF_SB_MAX_WORKERS):
            slots.append(_slot_dict(i, sl, wall))
        retired_statuses = [sl.retired.status[k] for k in range(_status_classes(&sl.retired))]
        retired_pauses = _pauses(sl.retired_pauses)
        if (sl.retired_requests or any(retired_statuses) or any(retired_pauses.values())
                or sl.retired_loop_stalls):
            # exited processes of this id (also ids above the current count)
            retired.append({"worker_id": i, "requests": sl.retired_requests,
                            "stats": _stats(&sl.retired), "accept_pauses": retired_pauses,
                            "loop_stalls": sl.retired_loop_stalls})
    return {
        "primary_pid": sb.primary_pid,
        "listen": _cstr(sb.listen),
        "workers": sb.workers,
        "generation": sb.generation,
        "uptime": round(wall - sb.started, 3),
        "queue_depth": sb.queue_depth,
        "queue_max": sb.queue_max,
        "stopping": bool(sb.stopping),
        "restarts_by_cause": {_CAUSES[i]: sb.restarts_by_cause[i] for i in range(TF_CAUSE_COUNT)},
        "latency_bounds": [tf_latency_bounds[i] for i in range(TF_LATENCY_BUCKETS - 1)],
        "slots": slots,
        "processes": procs,
        "retired": retired,
    }


def read_scoreboard(path):
    """A snapshot of the scoreboard file at path, as plain Python values."""
    cdef bytes path_b = os.fsencode(path)
    cdef const tf_scoreboard *sb = tf_scoreboard_open(path_b)
    if sb == NULL:
        raise OSError(f"cannot read the scoreboard {path}")
    try:
        return _snapshot(sb)
    finally:
        tf_scoreboard_close(sb)


def scoreboard_snapshot():
    """A snapshot of this process tree's own scoreboard (in the primary or a worker)."""
    if tf_sb == NULL:
        raise RuntimeError("no scoreboard: not running under the tailfast supervisor")
    return _snapshot(tf_sb)


def count_loop_stall():
    """Counts one event-loop stall in this worker's scoreboard entry (tailfast.watchdog
    calls it from its thread; nothing outside a worker)."""
    tf_scoreboard_count_stall()
