"""SIGHUP rolling restarts under load: every replacement is ready before the
worker it replaces drains; new code is served afterwards; nothing fails."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from pathlib import Path

from conftest import Load, wait_until

from tailfast.status import read_status

APP = '''
import os

VERSION = "{version}"{padding}


def app(request):
    return f"{{VERSION}} {{os.getpid()}}"
'''


def write_app(path: Path, version: str) -> None:
    # a different size each time: the import system's cache checks size and mtime
    path.write_text(APP.format(version=version, padding=" " * len(version) * 3))


def test_three_sighup_rolls_under_load_fail_nothing_and_serve_new_code(run_server, tmp_path):
    app_file = tmp_path / "rollapp.py"
    write_app(app_file, "v0")
    server = run_server("rollapp:app", "--bind", ":0", "--workers", "2", cwd=tmp_path)
    load = Load(server.port)
    try:
        load.wait_answered(1)  # v0 is served before the first roll
        for roll in range(1, 4):
            write_app(app_file, f"v{roll}")
            server.signal(signal.SIGHUP)
            server.wait_for(r"ready in \d+ ms; retiring pid", count=2 * roll, timeout=15)
            server.wait_for(r"\(retired\)", count=2 * roll, timeout=15)
            snapshot = read_status(pid=server.proc.pid)
            ready = [p for p in snapshot["processes"] if p["ready"]]
            assert len(ready) == 2
            assert {p["generation"] for p in ready} == {roll}
            # the load reaches the new code before the next roll
            assert wait_until(lambda v=f"v{roll}": v in load.versions, 10), load.failures[:5]
        load.wait_answered(101)
    finally:
        load.stop()
    print(f"\nrolling restarts: {load.ok} requests answered, {len(load.failures)} failed")
    assert not load.failures, load.failures[:5]
    assert load.ok > 100
    assert {"v0", "v1", "v2", "v3"} <= set(load.versions)
    # afterwards only the new code answers
    for _ in range(20):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().read().decode().startswith("v3 ")
        conn.close()


def test_hup_storm_coalesces_and_never_drops_below_n_ready(run_server, tmp_path):
    app_file = tmp_path / "stormapp.py"
    write_app(app_file, "a")
    server = run_server("stormapp:app", "--bind", ":0", "--workers", "2", cwd=tmp_path)
    write_app(app_file, "bb")
    server.wait_ready(2)  # the property is about the storm, from ready on
    samples: list[int] = []
    done = threading.Event()

    def consistent() -> dict:
        """A snapshot read twice alike: one read walks the entries one by one,
        and a replacement's entry read before it was ready beside the entry of
        the worker it replaced, read after that one began draining, would show
        a dip that never was."""
        previous = None
        while True:
            snapshot = read_status(pid=server.proc.pid)
            states = [(p["pid"], p["state"]) for p in snapshot["processes"]]
            if states == previous:
                return snapshot
            previous = states

    def sample() -> None:
        while not done.is_set():
            snapshot = consistent()
            samples.append(sum(p["ready"] for p in snapshot["processes"]))
            time.sleep(0.002)  # the sampling interval

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for _ in range(10):  # ten signals within a second
            server.signal(signal.SIGHUP)
            time.sleep(0.05)  # the storm's spacing: what is tested
        snapshot = server.wait_state(
            lambda s: len(s["processes"]) == 2 and {
                p["generation"] for p in s["processes"] if p["ready"]} == {s["generation"]},
            "two workers left, all of the last generation", timeout=20)
    finally:
        done.set()
        sampler.join()
    assert snapshot["generation"] == 10
    assert len(samples) > 50
    assert min(samples) >= 2, samples
    # at most one replacement per worker per signal, one roll at a time
    replaced = server.output.count("retiring pid")
    assert 2 <= replaced <= 20, server.output
    print(f"\nHUP storm: 10 signals, {replaced} replacements, "
          f"ready workers never below {min(samples)} in {len(samples)} samples")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().read().decode().startswith("bb ")
    conn.close()


def test_broken_new_code_keeps_the_old_workers_serving(run_server, tmp_path):
    app_file = tmp_path / "brokenapp.py"
    write_app(app_file, "good")
    server = run_server("brokenapp:app", "--bind", ":0", "--workers", "1", cwd=tmp_path)
    app_file.write_text("raise RuntimeError('deploy went wrong')\n")
    server.signal(signal.SIGHUP)
    server.wait_for(r"cannot load the application", timeout=10)
    server.wait_for(r"before it was ready; crashed \d+ times in [\d.]+ s, next attempt in",
                    timeout=10)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().read().decode().startswith("good ")
    conn.close()
    # fixed on disk: the next attempt loads it
    write_app(app_file, "fixed")
    server.wait_for(r"ready in \d+ ms; retiring pid", timeout=15)
    server.wait_for(r"\(retired\)", timeout=15)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().read().decode().startswith("fixed ")
    conn.close()
