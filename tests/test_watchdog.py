"""The loop-stall watchdog (tailfast/watchdog.py): one warning per stall, with the stack."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import http_request, wait_until

from tailfast import config, watchdog
from tailfast.errors import ConfigError
from tailfast.testing import server_env

WARNING = re.compile(r"tailfast: pid \d+: event loop blocked for (\d+\.\d+) s so far "
                     r"\(--loop-stall-warning 0\.5\); the code holding it, most recent call last:")

PRELUDE = """\
import asyncio, threading, time
from tailfast import log, watchdog
log.set_level(log.DEBUG)


async def main():
    dog = watchdog.start(asyncio.get_running_loop(), 0.5)
    await asyncio.sleep(0.2)  # the first heartbeat runs
    await body()
    await asyncio.sleep(0.3)  # it comes back
    dog.stop()
    print("stalls", dog.stalls, "threads", threading.active_count())


"""


def run_loop(tmp_path: Path, body: str, runner: str = "asyncio.run(main())") -> tuple[str, str]:
    """Runs PRELUDE + body (an `async def body()`) + runner as a script in a new
    process; returns its stdout and stderr."""
    script = tmp_path / "stalling.py"
    script.write_text(PRELUDE + textwrap.dedent(body) + "\n\n" + runner + "\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=server_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def test_time_sleep_in_a_coroutine_gives_one_warning_with_its_line(tmp_path: Path) -> None:
    out, err = run_loop(tmp_path, """\
        async def body():
            time.sleep(1.2)  # blocks the loop
        """)
    assert "stalls 1 threads 1" in out, out + err
    assert len(WARNING.findall(err)) == 1, err
    assert 0.5 <= float(WARNING.findall(err)[0]) < 1.2  # reported while it lasts
    stack = err[err.index("most recent call last:"):]
    script = tmp_path / "stalling.py"
    line = script.read_text().splitlines().index("    time.sleep(1.2)  # blocks the loop") + 1
    assert f'File "{script}", line {line}, in body\n' in stack, err
    assert "    time.sleep(1.2)  # blocks the loop\n" in stack
    # asyncio's own frames around the callback are left out
    assert "base_events.py" not in stack and "events.py" not in stack
    assert re.search(r"event loop back after 1\.\d\d s", err), err  # the debug line


def test_a_cpu_loop_holding_the_gil_is_found_too(tmp_path: Path) -> None:
    out, err = run_loop(tmp_path, """\
        def spin(seconds):
            end = time.monotonic() + seconds
            n = 0
            while time.monotonic() < end: n += 1  # the CPU loop
            return n


        async def body():
            spin(1.2)
        """)
    assert "stalls 1" in out and len(WARNING.findall(err)) == 1, err
    assert "in spin\n    while time.monotonic() < end: n += 1  # the CPU loop\n" in err
    assert "in body\n    spin(1.2)\n" in err


def test_awaiting_is_not_a_stall(tmp_path: Path) -> None:
    out, err = run_loop(tmp_path, """\
        async def body():
            await asyncio.sleep(2)
            await asyncio.gather(*(asyncio.sleep(0.01 * i) for i in range(100)))
        """)
    assert "stalls 0 threads 1" in out and "blocked" not in err, out + err


def test_one_warning_per_stall(tmp_path: Path) -> None:
    out, err = run_loop(tmp_path, """\
        async def body():
            time.sleep(0.9)
            await asyncio.sleep(0.3)
            time.sleep(0.9)
        """)
    assert "stalls 2" in out and len(WARNING.findall(err)) == 2, err


def test_uvloop(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    out, err = run_loop(tmp_path, """\
        async def body():
            time.sleep(1.2)
        """, runner="import uvloop\nuvloop.run(main())")
    assert "stalls 1" in out and len(WARNING.findall(err)) == 1, err
    assert "in body\n    time.sleep(1.2)\n" in err


def test_stop_ends_the_thread_and_the_heartbeat() -> None:
    import asyncio

    async def watch() -> watchdog.Watchdog:
        dog = watchdog.start(asyncio.get_running_loop(), 0.2)
        await asyncio.sleep(0.15)
        assert dog._thread is not None and dog._thread.is_alive()
        assert dog._beat > 0  # the heartbeat ran on the loop
        dog.stop()
        beat = dog._beat
        await asyncio.sleep(0.2)  # > one interval: no beat re-armed
        assert dog._beat == beat
        dog.stop()  # twice is fine
        return dog

    before = threading.active_count()
    dog = asyncio.run(watch())
    assert dog._thread is not None and not dog._thread.is_alive()
    assert threading.active_count() == before


def test_zero_watches_nothing() -> None:
    import asyncio

    async def watch() -> watchdog.Watchdog:
        before = threading.active_count()
        dog = watchdog.start(asyncio.get_running_loop(), 0)
        assert threading.active_count() == before and dog._thread is None
        dog.stop()
        return dog

    asyncio.run(watch())


def test_on_stall_gets_the_stack() -> None:
    import asyncio
    import time

    seen: list[tuple[float, str]] = []

    async def watch() -> None:
        dog = watchdog.start(asyncio.get_running_loop(), 0.2,
                             on_stall=lambda s, st: seen.append((s, st)))
        await asyncio.sleep(0.1)
        time.sleep(0.5)  # held here
        await asyncio.sleep(0.1)
        dog.stop()

    asyncio.run(watch())
    assert len(seen) == 1 and seen[0][0] > 0.2
    assert "time.sleep(0.5)  # held here" in seen[0][1]


def test_the_setting(tmp_path: Path) -> None:
    def load(**kwargs: str) -> float:
        return config.load_config(kwargs, environ={}, cwd=tmp_path).loop_stall_warning

    assert load() == 0.5
    assert load(loop_stall_warning="0") == 0.0
    assert load(loop_stall_warning="2.5") == 2.5
    assert config.load_config({}, environ={"TAILFAST_LOOP_STALL_WARNING": "1"},
                              cwd=tmp_path).loop_stall_warning == 1.0
    for bad in ("0.01", "-1", "nan", "x"):
        with pytest.raises(ConfigError, match="expected seconds >= 0.05 \\(0 = off\\)"):
            load(loop_stall_warning=bad)


def test_stalls_are_counted_in_the_worker_scoreboard(run_server) -> None:
    server = run_server("stallapp:app", "--bind", ":0", "--workers", "1",
                        "--metrics-path", "/metrics")
    assert http_request(server.port, path="/stall")[2] == b"1"
    server.wait_for(r"worker 1 \(pid \d+\): event loop blocked for", timeout=5)
    assert "    time.sleep(0.6)  # the line the warning shows" in server.output
    snapshot = server.wait_state(lambda s: s["processes"][0]["loop_stalls"] == 1, "one stall")
    assert snapshot["processes"][0]["loop_stalls"] == 1
    body = http_request(server.port, path="/metrics")[2].decode()
    assert 'tailfast_loop_stalls_total{worker="1"} 1' in body


def test_stop_from_another_thread_and_a_closed_loop() -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    dog = watchdog.start(loop, 0.1)  # from this thread, the loop running in another
    try:
        wait_until(lambda: dog._loop_thread == runner.ident, timeout=5)
        dog.stop()
        assert dog._thread is not None and not dog._thread.is_alive() and dog.stalls == 0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=10)
        loop.close()

    # a loop closed without stop(): the thread ends by itself
    loop = asyncio.new_event_loop()
    dog = watchdog.start(loop, 0.1)
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.close()
    assert dog._thread is not None
    dog._thread.join(timeout=5)
    assert not dog._thread.is_alive()
