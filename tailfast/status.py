"""`tailfast status`: a running server's scoreboard, as a table or JSON."""

from __future__ import annotations

import os
from typing import Any

from tailfast.errors import TailfastError
from tailfast.metrics import PAUSE_REASONS


def _primary_pid(pid: int | None, pid_file: str | None) -> int:
    if pid is not None:
        return pid
    assert pid_file is not None
    try:
        with open(pid_file) as f:
            text = f.read().strip()
    except OSError as exc:
        raise TailfastError(f"cannot read pid file {pid_file}: {exc.strerror}") from None
    if not text.isdigit():
        raise TailfastError(f"pid file {pid_file} holds {text!r}, expected a pid")
    return int(text)


def read_status(pid: int | None = None, pid_file: str | None = None) -> dict[str, Any]:
    """The scoreboard of the primary with this pid (or the pid in pid_file)."""
    from tailfast import _core
    from tailfast.server import scoreboard_dirs

    primary = _primary_pid(pid, pid_file)
    name = f"tailfast-{primary}.scoreboard"
    for directory in scoreboard_dirs():
        path = os.path.join(directory, name)
        if os.path.exists(path):
            try:
                snapshot: dict[str, Any] = _core.read_scoreboard(path)
            except OSError as exc:
                raise TailfastError(str(exc)) from None
            if snapshot["primary_pid"] != primary:
                continue
            try:
                os.kill(primary, 0)
            except ProcessLookupError:
                raise TailfastError(f"no tailfast primary with pid {primary} is running") from None
            except PermissionError:
                pass
            return snapshot
    raise TailfastError(f"no scoreboard for a tailfast primary with pid {primary}")


def _mib(value: int) -> str:
    return f"{value / (1024 * 1024):.1f}"


def _pauses(process: dict[str, Any]) -> str:
    """Times it paused accepting: fair share/EMFILE/--max-connections."""
    pauses = process.get("accept_pauses", {})
    return "/".join(str(pauses.get(k, 0)) for k in PAUSE_REASONS)


def format_table(snapshot: dict[str, Any]) -> str:
    """One header line, then a row per worker process and per slot in back-off. PAUSES:
    times the worker paused accepting, above its fair share/out of descriptors/at
    --max-connections. STALLS: times its event loop was held past --loop-stall-warning."""
    depth = snapshot["queue_depth"]
    queue = "n/a" if depth < 0 else f"{depth}/{snapshot['queue_max']}"
    lines = [
        f"primary {snapshot['primary_pid']} on {snapshot['listen']}: "
        f"{snapshot['workers']} workers, generation {snapshot['generation']}, "
        f"up {snapshot['uptime']:.0f} s, listen queue {queue}",
        f"{'ID':>3} {'PID':>8} {'STATE':<9} {'GEN':>3} {'REQUESTS':>9} {'ACCEPTED':>9} "
        f"{'OPEN':>5} {'PAUSES':>13} {'STALLS':>6} {'UP(s)':>7} {'RSS(MiB)':>8} "
        f"{'RESTARTS':>8} {'THREADS':>9}  REQUEST",
    ]
    slots = {s["worker_id"]: s for s in snapshot["slots"]}
    for p in sorted(snapshot["processes"], key=lambda p: (p["worker_id"], p["uptime"])):
        slot = slots.get(p["worker_id"], {})
        request = ""
        if p["request"]:
            request = f"{p['request']} ({p['request_age']:.1f} s)"
        elif p["in_flight"]:
            request = f"{p['in_flight']} in flight (oldest {p['in_flight_age'] or 0:.1f} s)"
        # busy threads/threads, +requests waiting for one; "-" when requests run inline
        threads = "-"
        if p["threads"]:
            threads = f"{p['threads_busy']}/{p['threads']}"
            if p["threads_waiting"]:
                threads += f"+{p['threads_waiting']}"
        lines.append(
            f"{p['worker_id']:>3} {p['pid']:>8} {p['state']:<9} {p['generation']:>3} "
            f"{p['requests']:>9} {p['accepted']:>9} {p['open']:>5} {_pauses(p):>13} "
            f"{p.get('loop_stalls', 0):>6} {p['uptime']:>7.0f} "
            f"{_mib(p['rss']):>8} {slot.get('restarts', 0):>8} {threads:>9}  {request}"
        )
    for slot in snapshot["slots"]:
        if slot["state"] == "backoff":
            lines.append(
                f"{slot['worker_id']:>3} {'-':>8} {'backoff':<9} {'':>3} {'':>9} {'':>9} "
                f"{'':>5} {'':>13} {'':>6} {'':>7} {'':>8} {slot['restarts']:>8} {'':>9}  "
                f"{slot['crashes']} crashes, next attempt in {slot['next_attempt_in']:.1f} s"
            )
    return "\n".join(lines)
