"""The primary: respawn on SIGCHLD, graceful and immediate stops, death with the primary."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    LISTENING,
    http_request,
    pid_alive,
    read_scoreboard,
    ready_count,
    server_env,
    wait_until,
)


def test_killed_worker_is_replaced_in_its_slot(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "2")
    before = server.live_workers()
    victim = before[2]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker 2 \(pid {victim}\) killed by signal 9; restarting", timeout=2)
    server.wait_for(r"worker 2 \(pid \d+\) started", count=2, timeout=2)
    after = server.live_workers()
    assert len(after) == 2
    assert after[1] == before[1]
    assert after[2] != victim
    assert not pid_alive(victim)
    # the replacement serves within a second of the kill
    served: set[int] = set()
    while time.monotonic() - killed_at < 1.0 and after[2] not in served:
        _, _, body = http_request(server.port, path="/slow?0.05")
        served.add(int(body.split()[1]))
        threads = [threading.Thread(target=http_request, args=(server.port,),
                                    kwargs={"path": "/slow?0.05"}) for _ in range(2)]
        for t in threads:
            t.start()
        _, _, body = http_request(server.port, path="/pid")
        served.add(int(body.split()[0]))
        for t in threads:
            t.join()
    assert after[2] in served


def test_worker_that_exits_is_logged_with_its_status(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    pid = server.live_workers()[1]
    try:
        http_request(server.port, path="/exit", timeout=3)
    except Exception:
        pass  # the worker died mid-request: the connection closes without an answer
    server.wait_for(rf"worker 1 \(pid {pid}\) exited with status 7; restarting")
    server.wait_for(r"worker 1 \(pid \d+\) started", count=2)
    assert http_request(server.port)[0] == 200


def test_crash_loop_backs_off(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    for round_ in range(3):
        pid = server.live_workers()[1]
        os.kill(pid, signal.SIGKILL)
        server.wait_for(rf"worker 1 \(pid {pid}\) killed by signal 9", timeout=3)
        server.wait_for(r"worker 1 \(pid \d+\) started", count=round_ + 2, timeout=5)
    # the warning says how many crashes in what time and when the next attempt is
    assert re.search(r"crashed 2 times in \d+\.\d s, next attempt in 0\.1 s", server.output)
    assert re.search(r"crashed 3 times in \d+\.\d s, next attempt in 0\.2 s", server.output)
    assert http_request(server.port)[0] == 200


def test_sigterm_finishes_in_flight_request_and_exits_0(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "2")
    result: dict[str, object] = {}

    def slow() -> None:
        result["reply"] = http_request(server.port, path="/slow?1.0")

    t = threading.Thread(target=slow)
    t.start()
    server.wait_busy("GET", "/slow")  # the request is in the handler now
    server.signal(signal.SIGTERM)
    t.join(10)
    status, headers, body = result["reply"]
    assert status == 200 and body.startswith(b"slept")
    assert headers["connection"] == "close"
    assert server.wait(15) == 0
    server.wait_for(r"stopping gracefully")
    server.wait_for(r"primary \d+ stopped")
    assert not any(pid_alive(p) for p in server.seen_pids)


def test_graceful_timeout_kills_stuck_workers(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1",
                        "--graceful-timeout", "0.5")
    t = threading.Thread(target=lambda: _swallow(http_request, server.port, path="/slow?5"))
    t.start()
    server.wait_busy("GET", "/slow")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(10) == 0
    assert time.monotonic() - started < 3
    server.wait_for(r"graceful timeout: killing 1 remaining workers")
    t.join(10)


def _swallow(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception:
        pass


def test_sigint_is_graceful_too(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "2")
    server.signal(signal.SIGINT)
    assert server.wait(10) == 0
    server.wait_for(r"SIGINT, stopping gracefully")


def test_sigquit_stops_immediately(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "2")
    t = threading.Thread(target=lambda: _swallow(http_request, server.port, path="/slow?5"))
    t.start()
    server.wait_busy("GET", "/slow")
    started = time.monotonic()
    server.signal(signal.SIGQUIT)
    assert server.wait(10) == 0
    assert time.monotonic() - started < 2
    assert not any(pid_alive(p) for p in server.seen_pids)
    t.join(10)


@pytest.mark.parametrize("second", ["SIGINT", "SIGTERM"])
def test_a_second_stop_signal_during_a_graceful_stop_stops_at_once(run_server, second):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    t = threading.Thread(target=lambda: _swallow(http_request, server.port, path="/slow?15",
                                                 timeout=20))
    t.start()
    server.wait_busy("GET", "/slow")
    started = time.monotonic()
    server.signal(signal.SIGINT)
    server.wait_for(r"SIGINT, stopping gracefully")
    assert server.proc.poll() is None  # the graceful stop waits for the request
    server.signal(getattr(signal, second))
    assert server.wait(10) == 0
    assert time.monotonic() - started < 5
    server.wait_for(rf"primary \d+: {second} again, stopping now")
    assert not any(pid_alive(p) for p in server.seen_pids)
    t.join(10)


def test_killing_the_primary_leaves_no_worker(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "3")
    workers = list(server.live_workers().values())
    assert len(workers) == 3
    server.proc.kill()
    server.wait(5)
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=5)


def test_ttin_and_ttou_change_the_worker_count(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    server.signal(signal.SIGTTIN)
    server.wait_for(r"SIGTTIN: now 2 workers")
    server.wait_for(r"worker 2 \(pid \d+\) started")
    assert sorted(server.live_workers()) == [1, 2]
    pid2 = server.live_workers()[2]
    server.signal(signal.SIGTTOU)
    server.wait_for(r"SIGTTOU: now 1 workers")
    server.wait_for(rf"worker 2 \(pid {pid2}\) exited with status 0$")
    server.wait_state(lambda s: [p["worker_id"] for p in s["processes"]] == [1],
                      "worker 1 alone")
    assert sorted(server.live_workers()) == [1]
    assert http_request(server.port)[0] == 200


def _run_python(code: str, timeout: float = 20.0) -> subprocess.Popen[str]:
    env = server_env()
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_spawn_workers_supervises_plain_functions(tmp_path):
    marker = tmp_path / "runs"
    marker.mkdir()
    code = f"""
import os, sys, time, tailfast
def target(worker_id):
    assert tailfast.get_worker_id() == worker_id and not tailfast.is_primary()
    open(os.path.join({str(marker)!r}, f"{{worker_id}}-{{os.getpid()}}"), "w").close()
    if worker_id == 1 and len(os.listdir({str(marker)!r})) < 4:
        sys.exit(5)   # worker 1 dies a few times and is brought back
    time.sleep(60)
assert tailfast.is_primary() and tailfast.get_worker_id() is None
sys.exit(tailfast.spawn_workers(2, target, graceful_timeout=5))
"""
    proc = _run_python(code)
    try:
        assert wait_until(lambda: len(os.listdir(marker)) >= 4, timeout=10)
        names = os.listdir(marker)
        ids = sorted(int(n.split("-")[0]) for n in names)
        assert ids.count(2) == 1 and ids.count(1) >= 3
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "exited with status 5; restarting" in err
        pids = [int(n.split("-")[1]) for n in names]
        assert not any(pid_alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_api(tmp_path):
    code = """
import sys, tailfast
def app(request):
    return {"worker": tailfast.get_worker_id(), "path": request.path}
sys.exit(tailfast.serve(app, bind="127.0.0.1:0", workers=2))
"""
    proc = _run_python(code)
    try:
        port = None
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            listening = LISTENING.search(line)
            if listening:
                port = int(listening.group(2).rsplit(":", 1)[1])
                break
        assert port, "".join(lines)
        assert wait_until(lambda: ready_count(read_scoreboard(proc.pid) or {"processes": []})
                          == 2, timeout=10), "".join(lines)
        status, _, body = http_request(port, path="/x")
        assert status == 200 and b'"path":"/x"' in body.replace(b" ", b"")
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
