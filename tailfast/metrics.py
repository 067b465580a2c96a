"""The scoreboard in the Prometheus text exposition format (version 0.0.4).

Served on `--metrics-path` by whichever worker accepts the scrape; every
worker maps the same scoreboard, so any of them reports the whole server.
Counters of workers that have exited are kept in their slot by the primary,
so totals only go up while the primary runs.

The text is written directly (no dependency); the tests parse it with
prometheus-client's parser.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
PAUSE_REASONS = ("fair_share", "emfile", "max_connections")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _le(bound: float) -> str:
    return repr(float(bound))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> None:
        text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
        labelled = f"{name}{{{text}}}" if text else name
        self.lines.append(f"{labelled} {_number(value)}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _add(total: list[int] | list[float], values: Iterable[float]) -> None:
    for i, value in enumerate(values):
        total[i] += value  # type: ignore[call-overload]


class _Totals:
    """Counters summed over live and retired processes."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        procs: list[dict[str, Any]] = snapshot["processes"]
        retired: list[dict[str, Any]] = snapshot.get("retired", [])
        self.status = [0] * len(STATUS_CLASSES)
        self.latency = [0] * (len(snapshot["latency_bounds"]) + 1)
        self.latency_sum = 0.0
        self.per_worker = _by_worker([*procs, *retired], "requests")
        self.loop_stalls = _by_worker([*procs, *retired], "loop_stalls")
        self.pauses = dict.fromkeys(PAUSE_REASONS, 0)
        for entry in [*procs, *retired]:
            for reason, count in entry.get("accept_pauses", {}).items():
                self.pauses[reason] = self.pauses.get(reason, 0) + count
            stats = entry["stats"]
            _add(self.status, stats["status"])
            _add(self.latency, stats["latency"])
            self.latency_sum += stats["latency_sum"]
        for slot in snapshot["slots"]:
            self.per_worker.setdefault(slot["worker_id"], 0)


def _by_worker(procs: list[dict[str, Any]], field: str) -> dict[int, int]:
    """field summed per worker id (a worker being replaced counts with its successor)."""
    totals: dict[int, int] = {}
    for p in procs:
        totals[p["worker_id"]] = totals.get(p["worker_id"], 0) + p.get(field, 0)
    return totals


def _write_counters(w: _Writer, snapshot: dict[str, Any], t: _Totals) -> None:
    w.family("tailfast_requests_total", "counter",
             "Requests dispatched by the workers (health and metrics requests included).")
    w.sample("tailfast_requests_total", sum(t.per_worker.values()))

    w.family("tailfast_responses_total", "counter",
             "Responses sent, by status class (parse errors and timeouts included).")
    for cls, count in zip(STATUS_CLASSES, t.status, strict=True):
        w.sample("tailfast_responses_total", count, [("code", cls)])

    w.family("tailfast_worker_requests_total", "counter",
             "Requests dispatched, by worker id (its replaced processes included).")
    for worker in sorted(t.per_worker):
        w.sample("tailfast_worker_requests_total", t.per_worker[worker],
                 [("worker", str(worker))])

    w.family("tailfast_worker_restarts_total", "counter",
             "Worker processes replaced, by cause (crash = exited without being asked).")
    for cause, count in snapshot["restarts_by_cause"].items():
        w.sample("tailfast_worker_restarts_total", count, [("cause", cause)])

    w.family("tailfast_accept_pauses_total", "counter",
             "Times a worker paused accepting, by reason: above its fair share of connections, "
             "accept out of descriptors (EMFILE, ENFILE) or memory, at --max-connections.")
    for reason, count in t.pauses.items():
        w.sample("tailfast_accept_pauses_total", count, [("reason", reason)])

    w.family("tailfast_loop_stalls_total", "counter",
             "Times a worker's event loop was held longer than --loop-stall-warning "
             "(each logged with the stack holding it), by worker id.")
    for worker in sorted(t.per_worker):
        w.sample("tailfast_loop_stalls_total", t.loop_stalls.get(worker, 0),
                 [("worker", str(worker))])


def _write_latency(w: _Writer, bounds: list[float], t: _Totals) -> None:
    w.family("tailfast_request_duration_seconds", "histogram",
             "Time from dispatching a request to handing its response to the socket.")
    cumulative = 0
    for bound, count in zip(bounds, t.latency[:-1], strict=True):
        cumulative += count
        w.sample("tailfast_request_duration_seconds_bucket", cumulative, [("le", _le(bound))])
    cumulative += t.latency[-1]
    w.sample("tailfast_request_duration_seconds_bucket", cumulative, [("le", "+Inf")])
    w.sample("tailfast_request_duration_seconds_sum", t.latency_sum)
    w.sample("tailfast_request_duration_seconds_count", cumulative)


def _write_concurrency(w: _Writer, procs: list[dict[str, Any]]) -> None:
    w.family("tailfast_requests_in_flight", "gauge",
             "Requests being handled now (one per busy worker, this scrape included, "
             "plus those handed to runner threads).")
    w.sample("tailfast_requests_in_flight",
             sum((1 if p["state"] == "busy" else 0) + p["in_flight"] for p in procs))

    threaded = [p for p in procs if p["threads"]]
    for field, name, help_text in (
        ("threads", "tailfast_threads", "Runner threads (--threads), by worker id."),
        ("threads_busy", "tailfast_threads_busy", "Runner threads running a request."),
        ("threads_waiting", "tailfast_requests_waiting_for_thread",
         "Requests queued for a runner thread."),
    ):
        w.family(name, "gauge", help_text)
        by_worker = _by_worker(threaded, field)
        for worker in sorted(by_worker):
            w.sample(name, by_worker[worker], [("worker", str(worker))])

    w.family("tailfast_open_connections", "gauge", "Client connections open in the workers.")
    w.sample("tailfast_open_connections", sum(p["open"] for p in procs))



def _write_server(w: _Writer, snapshot: dict[str, Any], procs: list[dict[str, Any]]) -> None:
    depth, capacity = snapshot["queue_depth"], snapshot["queue_max"]
    if depth >= 0:
        w.family("tailfast_listen_queue_depth", "gauge",
                 "Connections waiting in the listen queue to be accepted.")
        w.sample("tailfast_listen_queue_depth", depth)
        w.family("tailfast_listen_queue_capacity", "gauge", "Capacity of the listen queue.")
        w.sample("tailfast_listen_queue_capacity", capacity)

    w.family("tailfast_workers", "gauge", "Worker processes wanted.")
    w.sample("tailfast_workers", snapshot["workers"])

    w.family("tailfast_processes", "gauge", "Worker processes by state.")
    for state in ("starting", "idle", "busy", "draining"):
        w.sample("tailfast_processes", sum(1 for p in procs if p["state"] == state),
                 [("state", state)])

    w.family("tailfast_worker_resident_memory_bytes", "gauge",
             "Resident memory of the worker processes, by worker id (sampled each second).")
    rss = _by_worker(procs, "rss")
    for worker in sorted(rss):
        w.sample("tailfast_worker_resident_memory_bytes", rss[worker], [("worker", str(worker))])

    w.family("tailfast_generation", "gauge", "Code generation (each SIGHUP adds one).")
    w.sample("tailfast_generation", snapshot["generation"])

    w.family("tailfast_stopping", "gauge", "1 once the server has begun to stop.")
    w.sample("tailfast_stopping", 1 if snapshot.get("stopping") else 0)

    w.family("tailfast_start_time_seconds", "gauge", "Start of the primary, in Unix time.")
    w.sample("tailfast_start_time_seconds", round(time.time() - snapshot["uptime"], 3))


def render(snapshot: dict[str, Any]) -> str:
    """The metrics text of a scoreboard snapshot (tailfast._core.read_scoreboard)."""
    procs: list[dict[str, Any]] = snapshot["processes"]
    totals = _Totals(snapshot)
    w = _Writer()
    _write_counters(w, snapshot, totals)
    _write_latency(w, snapshot["latency_bounds"], totals)
    _write_concurrency(w, procs)
    _write_server(w, snapshot, procs)
    return "\n".join(w.lines) + "\n"
