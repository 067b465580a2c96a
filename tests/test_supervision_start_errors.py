"""A worker that cannot start (exit status TF_EXIT_FATAL) stops the server only
at its very first start; a respawned worker failing the same way (EMFILE from
epoll_create1, a --no-preload import failing) backs off like a crash while the
other workers serve, and the slot recovers once the cause is gone (issue 15
item 5). Real servers; faults injected from outside."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

from conftest import http_request, pid_alive, preload_library

# epoll_create1 fails with EMFILE while the file named by $TF_TEST_EPOLL_FAILS
# exists, as when a worker starts with its descriptors used up.
FAILING_EPOLL = textwrap.dedent("""
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <errno.h>
    #include <stdlib.h>
    #include <unistd.h>

    int epoll_create1(int flags) {
        const char *flag = getenv("TF_TEST_EPOLL_FAILS");
        if (flag && access(flag, F_OK) == 0) {
            errno = EMFILE;
            return -1;
        }
        int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "epoll_create1");
        return real(flags);
    }
""")

# Imports while the file named by $TF_TEST_IMPORT_FAILS is absent, as code
# being deployed under a running --no-preload server may not.
FLAKY_APP = textwrap.dedent("""
    import os

    if os.path.exists(os.environ["TF_TEST_IMPORT_FAILS"]):
        raise ImportError("injected: this code does not import now")


    def app(request):
        return str(os.getpid())
""")



def _respawn_fails_then_recovers(server, flag: Path) -> None:
    """Worker 1 is killed while flag exists: its respawn cannot start and backs
    off, worker 2 serves all along; once flag is gone, worker 1 is back."""
    workers = server.live_workers()
    flag.touch()
    os.kill(workers[1], signal.SIGKILL)
    server.wait_for(r"worker 1 \(pid \d+\) exited with status 3; crashed \d+ times in "
                    r"[\d.]+ s, next attempt in [\d.]+ s", timeout=15)
    assert pid_alive(server.proc.pid) and "stopping" not in server.output
    for _ in range(5):
        assert http_request(server.port)[::2] == (200, str(workers[2]).encode())
    flag.unlink()
    server.wait_ready(2, timeout=30)
    assert set(server.live_workers()) == {1, 2}
    assert http_request(server.port)[0] == 200
    assert "stopping" not in server.output


def test_emfile_in_a_respawned_worker_backs_off(run_server, tmp_path: Path) -> None:
    flag = tmp_path / "epoll-fails"
    (tmp_path / "flakyapp.py").write_text(FLAKY_APP)
    server = run_server("flakyapp:app", "--bind", ":0", "--workers", "2", cwd=tmp_path,
                        env={"LD_PRELOAD":
                             str(preload_library(tmp_path, "failepoll", FAILING_EPOLL)),
                             "TF_TEST_EPOLL_FAILS": str(flag),
                             "TF_TEST_IMPORT_FAILS": str(tmp_path / "never")})
    _respawn_fails_then_recovers(server, flag)
    assert "cannot start event loop: Too many open files" in server.output


def test_failed_import_in_a_respawned_no_preload_worker_backs_off(run_server,
                                                                  tmp_path: Path) -> None:
    flag = tmp_path / "import-fails"
    (tmp_path / "flakyapp.py").write_text(FLAKY_APP)
    server = run_server("flakyapp:app", "--bind", ":0", "--workers", "2", "--no-preload",
                        cwd=tmp_path, env={"TF_TEST_IMPORT_FAILS": str(flag)})
    _respawn_fails_then_recovers(server, flag)
    assert "injected: this code does not import now" in server.output


def test_a_worker_that_cannot_start_at_first_start_stops_the_server(run_server,
                                                                    tmp_path: Path) -> None:
    flag = tmp_path / "epoll-fails"
    flag.touch()
    server = run_server("testapp:app", "--bind", ":0", "--workers", "2", wait=False,
                        env={"LD_PRELOAD":
                             str(preload_library(tmp_path, "failepoll", FAILING_EPOLL)),
                             "TF_TEST_EPOLL_FAILS": str(flag)})
    assert server.wait(30) == 1
    assert "cannot start; stopping" in server.output
