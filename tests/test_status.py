"""`tailfast status` and what the scoreboard shows: counts, back-off, recycling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from conftest import Load, server_env

from tailfast.status import read_status


def status_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = server_env()
    return subprocess.run([sys.executable, "-m", "tailfast", "status", *args],
                          capture_output=True, text=True, env=env, timeout=30)


def test_status_json_and_table_from_pid_file(run_server, tmp_path):
    pid_file = tmp_path / "tailfast.pid"
    server = run_server("testapp:app", "--bind", ":0", "--workers", "2",
                        "--pid-file", str(pid_file))
    assert pid_file.read_text().strip() == str(server.proc.pid)
    with Load(server.port, threads=2, limit=10.0) as load:
        load.wait_answered(200)
    # the primary samples memory once a second
    server.wait_state(lambda s: all(p["state"] == "idle" and p["rss"] > 0
                                    for p in s["processes"]), "idle workers with their RSS")
    proc = status_cli("--pid-file", str(pid_file), "--json")
    assert proc.returncode == 0, proc.stderr
    snapshot = json.loads(proc.stdout)
    assert snapshot["primary_pid"] == server.proc.pid
    assert snapshot["listen"] == server.url
    assert snapshot["queue_max"] == 2048
    workers = sorted(p["worker_id"] for p in snapshot["processes"])
    assert workers == [1, 2]
    assert sum(p["requests"] for p in snapshot["processes"]) >= load.ok
    assert {p["pid"] for p in snapshot["processes"]} == set(server.live_workers().values())
    assert all(p["state"] == "idle" and p["rss"] > 0 for p in snapshot["processes"])
    table = status_cli("--pid", str(server.proc.pid))
    assert table.returncode == 0, table.stderr
    assert "listen queue 0/2048" in table.stdout
    assert len(table.stdout.strip().splitlines()) == 4
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not pid_file.exists()
    gone = status_cli("--pid", str(server.proc.pid))
    assert gone.returncode == 2 and "no scoreboard" in gone.stderr


def test_crash_loop_back_off_is_shown_by_status(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    for round_ in range(6):
        pid = server.live_workers()[1]
        os.kill(pid, signal.SIGKILL)
        server.wait_for(rf"worker 1 \(pid {pid}\) killed by signal 9", timeout=5)
        if round_ < 5:
            server.wait_for(r"worker 1 \(pid \d+\) started", count=round_ + 2, timeout=10)
    server.wait_for(r"crashed 6 times in [\d.]+ s, next attempt in 1\.6 s")
    snapshot = json.loads(status_cli("--pid", str(server.proc.pid), "--json").stdout)
    slot = snapshot["slots"][0]
    assert slot["state"] == "backoff"
    assert slot["crashes"] == 6 and slot["restarts"] == 5
    assert 0 < slot["next_attempt_in"] <= 1.6
    assert "backoff" in status_cli("--pid", str(server.proc.pid)).stdout
    server.wait_for(r"worker 1 \(pid \d+\) started", count=7, timeout=5)


def test_max_requests_recycles_through_readiness_without_failures(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "2",
                        "--max-requests", "300", "--max-requests-jitter", "50")
    with Load(server.port, threads=4, limit=20.0) as load:
        load.wait_answered(1001, timeout=20)
        server.wait_for("max-requests reached; starting its replacement", count=2, timeout=20)
        server.wait_for(r"\(retired\)", timeout=20)
    print(f"\nmax-requests 300: {load.ok} answered, {len(load.failures)} failed, "
          f"{server.output.count('max-requests reached')} recycled")
    assert not load.failures, load.failures[:5]
    assert load.ok > 1000
    assert server.output.count("max-requests reached; starting its replacement") >= 2
    assert "(retired)" in server.output
    server.wait_ready(2)
    snapshot = read_status(pid=server.proc.pid)
    assert sum(p["ready"] for p in snapshot["processes"]) == 2
