"""The primary against what it cannot trust or control: shared memory written by
workers, failing forks, and workers that do not finish draining."""

from __future__ import annotations

import re
import signal
import textwrap
import threading
from pathlib import Path

from conftest import http_request, pid_alive, preload_library, wait_until

from tailfast.status import read_status

# A worker can write anywhere in the scoreboard: this app writes a huge
# procs_hw (the count of entries in use) into the header, as a buggy or
# hostile worker could.
SCRIBBLING_APP = textwrap.dedent("""
    import os
    import struct

    from tailfast.server import scoreboard_path

    PROCS_HW_OFFSET = 28  # magic u64, version u32, max_procs u32, pid, workers, generation


    def app(request):
        if request.path == "/scribble":
            fd = os.open(scoreboard_path(os.getppid()), os.O_RDWR)
            try:
                (before,) = struct.unpack("=i", os.pread(fd, 4, PROCS_HW_OFFSET))
                os.pwrite(fd, struct.pack("=i", 0x7FFFFFFF), PROCS_HW_OFFSET)
            finally:
                os.close(fd)
            return str(before)
        return b"ok"
""")


def test_primary_survives_a_worker_scribbling_procs_hw(run_server, tmp_path: Path) -> None:
    (tmp_path / "scribbleapp.py").write_text(SCRIBBLING_APP)
    server = run_server("scribbleapp:app", "--bind", ":0", "--workers", "1", cwd=tmp_path)
    old = server.live_workers()[1]
    # the field held 1 (one entry in use): the offset still matches the layout
    assert http_request(server.port, path="/scribble")[::2] == (200, b"1")
    # a roll walks the process table: the primary must still find its way
    server.signal(signal.SIGHUP)
    server.wait_for(rf"worker 1 \(pid \d+\) ready in \d+ ms; retiring pid {old}")
    assert http_request(server.port)[0] == 200
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not pid_alive(old)


# Fault injection from outside: fork() fails with EAGAIN while the file named
# by $TF_TEST_FORK_FAILS exists (as under a pids cgroup limit or ENOMEM).
FAILING_FORK = textwrap.dedent("""
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <errno.h>
    #include <stdlib.h>
    #include <unistd.h>

    pid_t fork(void) {
        const char *flag = getenv("TF_TEST_FORK_FAILS");
        if (flag && access(flag, F_OK) == 0) {
            errno = EAGAIN;
            return -1;
        }
        pid_t (*real_fork)(void) = (pid_t (*)(void))dlsym(RTLD_NEXT, "fork");
        return real_fork();
    }
""")



def test_failed_replacement_forks_back_off_longer_and_longer(run_server, tmp_path: Path) -> None:
    flag = tmp_path / "forks-fail"
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1",
                        env={"LD_PRELOAD":
                             str(preload_library(tmp_path, "failfork", FAILING_FORK)),
                             "TF_TEST_FORK_FAILS": str(flag)})
    old = server.live_workers()[1]
    # the bug needs a worker up longer than the primary's 30 s stability window
    assert wait_until(lambda: read_status(pid=server.proc.pid)["processes"][0]["uptime"] > 31,
                      timeout=45, interval=0.5)
    flag.touch()
    server.signal(signal.SIGHUP)
    # 0.1, 0.1, 0.2, 0.4, 0.8, then 1.6 s: 1.6 s after the first failure
    server.wait_for(r"worker 1: fork failed: .*next attempt in 1\.6 s", timeout=8)
    delays = [float(m.group(1)) for m in
              re.finditer(r"worker 1: fork failed: .*next attempt in ([\d.]+) s", server.output)]
    assert delays == sorted(delays), delays
    assert http_request(server.port)[0] == 200  # the old worker kept serving
    flag.unlink()
    server.wait_for(rf"worker 1 \(pid \d+\) ready in \d+ ms; retiring pid {old}", timeout=10)


def _busy(server, pid: int) -> bool:
    processes = read_status(pid=server.proc.pid)["processes"]
    return any(p["pid"] == pid and p["state"] == "busy" for p in processes)


def test_retired_worker_stuck_in_a_request_is_killed_after_the_graceful_timeout(
        run_server) -> None:
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1",
                        "--graceful-timeout", "1")
    retired: list[int] = []
    clients: list[threading.Thread] = []
    for _ in range(3):  # reload after reload: the retired ones never pile up
        old = server.live_workers()[1]
        client = threading.Thread(target=_request_ignoring_errors,
                                  args=(server.port, "/slow?60"), daemon=True)
        client.start()
        clients.append(client)
        assert wait_until(lambda old=old: _busy(server, old), timeout=5)
        server.signal(signal.SIGHUP)
        server.wait_for(rf"worker 1 \(pid \d+\) ready in \d+ ms; retiring pid {old}")
        server.wait_for(rf"worker 1 \(pid {old}\) still draining 1 s after it was retired "
                        r"\(graceful timeout\); killing it", timeout=4)
        server.wait_for(rf"worker 1 \(pid {old}\) killed by signal 9 \(retired\)", timeout=2)
        retired.append(old)
    assert not any(pid_alive(pid) for pid in retired)
    assert len(server.live_workers()) == 1
    assert http_request(server.port)[0] == 200
    for client in clients:
        client.join(5)


# In a worker forked after a SIGHUP, worker 2's import of the application
# hangs (a database that does not answer, say) while the file "hang" exists.
HANGING_IMPORT_APP = textwrap.dedent("""
    import time
    from pathlib import Path

    import tailfast

    if tailfast.get_worker_id() == 2 and Path(__file__).with_name("hang").exists():
        time.sleep(120)


    def app(request):
        return b"ok"
""")


def test_replacement_retired_while_starting_is_killed_after_the_graceful_timeout(
        run_server, tmp_path: Path) -> None:
    (tmp_path / "hangapp.py").write_text(HANGING_IMPORT_APP)
    server = run_server("hangapp:app", "--bind", ":0", "--workers", "2",
                        "--graceful-timeout", "1", cwd=tmp_path)
    old = server.live_workers()[2]
    (tmp_path / "hang").touch()
    server.signal(signal.SIGHUP)
    server.wait_for(rf"worker 2 \(pid {old}\): rolling restart; starting its replacement")
    hanging = int(server.wait_for(r"worker 2 \(pid (\d+)\) started", count=2)[1].group(1))
    server.signal(signal.SIGTTOU)  # worker 2 goes: its replacement with it
    server.wait_for(rf"worker 2 \(pid {old}\) exited with status 0")
    server.wait_for(rf"worker 2 \(pid {hanging}\) killed by signal 9", timeout=4)
    assert not pid_alive(hanging)
    assert http_request(server.port)[0] == 200


def _request_ignoring_errors(port: int, path: str) -> None:
    try:
        http_request(port, path=path, timeout=90)
    except OSError:
        pass  # its worker was killed: the connection closes without an answer
