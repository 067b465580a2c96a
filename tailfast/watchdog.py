"""The loop-stall watchdog: logs the Python stack that holds a worker's event loop too long.

How it works, and why it costs nothing per request:

- On the loop, a heartbeat callback re-arms itself with `loop.call_later`
  every threshold/4 and stores `time.monotonic()` (one timer, whatever the
  load: no per-request work, no cross-thread write).
- A thread wakes as often and compares: the beat is *late* by
  `now - (last beat + interval)`. The loop was certainly held for at least
  that long (the beat was due and did not run), so a warning is never a
  false alarm, and a stall of 1.25 x threshold or longer is always seen.
- Past the threshold it takes the loop thread's frame from
  `sys._current_frames()`, formats it with `linecache` (file, line, function,
  source text, most recent call last) and logs one warning. It then waits
  for the beat to move (the loop came back) before it can warn again: one
  warning per stall, and a debug line with the total when it ends.
- Each stall is counted in the worker's scoreboard entry (`loop_stalls`,
  shown by `tailfast status` and the metrics) when running under tailfast.

The heartbeat is a loop timer: whatever drives the loop (run_forever, or
the C loop of the ASGI runner) must run its timers on time, as it must for
`asyncio.sleep` anyway. Start it in the worker, after fork.

A loop held by C code that keeps the GIL (a regex, a C extension) cannot be
looked at while it is held: the thread reports it as soon as it gets the
GIL, with the stack the loop thread has then.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

from tailfast import log

__all__ = ["BEATS", "Watchdog", "format_stack", "start"]

# Heartbeats (and checks) per threshold: more catch shorter stalls past the
# threshold (every stall of (1 + 1/BEATS) x threshold) but wake the loop more.
BEATS = 4


_LOOP_RUNS_CALLBACK = (os.path.join("asyncio", "events.py"), "_run")  # asyncio.Handle._run


def format_stack(thread_id: int) -> str:
    """The Python stack of a thread, most recent call last, one "File, line, in
    function" line and its source line per frame (as in a traceback). Frames of the
    event loop itself, around the callback that runs (asyncio's Handle._run), are
    left out: what holds the loop is inside that callback."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return "  (the thread has no Python frame)\n"
    frames = list(traceback.walk_stack(frame))  # innermost first
    for depth, (f, _) in enumerate(frames):
        code = f.f_code
        if code.co_name == _LOOP_RUNS_CALLBACK[1] and code.co_filename.endswith(
                _LOOP_RUNS_CALLBACK[0]):
            frames = frames[:depth]
            break
    summary = traceback.StackSummary.extract(iter(frames), lookup_lines=True)
    summary.reverse()
    return "".join(summary.format())


def _count_in_scoreboard() -> None:
    """One stall more in this worker's scoreboard entry (nothing outside a worker)."""
    try:
        from tailfast import _core
    except ImportError:  # the extension is not built: nothing to count in
        return
    _core.count_loop_stall()


def _who() -> str:
    try:
        from tailfast import _core

        worker = _core.get_worker_id()
    except ImportError:
        worker = None
    return f"worker {worker} (pid {os.getpid()})" if worker is not None else f"pid {os.getpid()}"


class Watchdog:
    """Watches one event loop; made by start(). stop() ends it (idempotent, any thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float,
                 on_stall: Callable[[float, str], None] | None = None) -> None:
        self.threshold = threshold
        self.interval = threshold / BEATS
        self.stalls = 0  # warnings logged so far
        self._loop = loop
        self._on_stall = on_stall
        self._beat = 0.0  # time.monotonic() of the last heartbeat on the loop
        self._loop_thread: int | None = None  # known once the first beat ran
        self._timer: asyncio.TimerHandle | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._loop.call_soon_threadsafe(self._heartbeat)
        self._thread = threading.Thread(target=self._watch, name="tailfast-loop-watchdog",
                                        daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        """On the loop: the loop came round; the next beat is due in one interval."""
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        if not self._stopping.is_set():
            self._timer = self._loop.call_later(self.interval, self._heartbeat)

    def _watch(self) -> None:
        """The thread: one check per interval until stop()."""
        reported = 0.0  # the beat the reported stall began after (0: none open)
        while not self._stopping.wait(self.interval):
            beat = self._beat
            if self._loop.is_closed():
                return  # closed without stop(): nothing more to watch
            if self._loop_thread is None:
                continue  # the loop has not run yet: nothing to measure
            if reported:
                if beat != reported:  # it came back
                    total = beat - (reported + self.interval)
                    log.log(f"{_who()}: event loop back after {total:.2f} s", log.DEBUG)
                    reported = 0.0
                continue
            late = time.monotonic() - (beat + self.interval)
            if late > self.threshold:
                stack = format_stack(self._loop_thread)
                if self._beat != beat:
                    continue  # it came back while the stack was read: that stack is not it
                reported = beat
                self._report(late, stack)

    def _report(self, late: float, stack: str) -> None:
        self.stalls += 1
        _count_in_scoreboard()
        log.log(f"{_who()}: event loop blocked for {late:.2f} s so far (--loop-stall-warning "
                f"{self.threshold:g}); the code holding it, most recent call last:\n"
                f"{stack.rstrip()}", log.WARNING)
        if self._on_stall is not None:
            self._on_stall(late, stack)

    def stop(self) -> None:
        """Ends the thread and the heartbeat (from any thread); returns once the
        thread has ended."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        # a timer handle is the loop's to cancel; from elsewhere the next beat sees
        # _stopping and re-arms no more
        if self._timer is not None and self._loop_thread == threading.get_ident():
            self._timer.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


def start(loop: asyncio.AbstractEventLoop, threshold_seconds: float,
          on_stall: Callable[[float, str], None] | None = None) -> Watchdog:
    """Watches loop from a new thread: each stall past threshold_seconds logs one
    warning with the loop thread's stack, is counted in the worker's scoreboard and
    calls on_stall(seconds_so_far, stack) when given. threshold_seconds <= 0 (the
    setting's "off"): nothing is watched, stop() still works. Call it once the loop
    exists, before or after it starts running, from any thread."""
    dog = Watchdog(loop, threshold_seconds, on_stall)
    if threshold_seconds > 0:
        dog._start()
    else:
        dog._stopping.set()
    return dog
