"""Worker lifecycle hooks and --no-preload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import http_request, server_env

HOOK_APP = '''
import os
import tailfast

MARKS = os.environ["MARKS"]
open(os.path.join(MARKS, f"import-{os.getpid()}"), "w").close()
connection = None

def start(worker_id):
    global connection
    connection = f"conn-{worker_id}-{os.getpid()}"
    open(os.path.join(MARKS, f"start-{worker_id}-{os.getpid()}"), "w").close()

def stop(worker_id):
    open(os.path.join(MARKS, f"exit-{worker_id}-{os.getpid()}"), "w").close()

def app(request):
    return f"{connection} {tailfast.get_worker_id()}"
'''


def write_app(tmp_path: Path) -> Path:
    (tmp_path / "hookapp.py").write_text(HOOK_APP)
    marks = tmp_path / "marks"
    marks.mkdir()
    return marks


def test_start_and_exit_hooks_run_in_each_worker(run_server, tmp_path):
    marks = write_app(tmp_path)
    server = run_server("hookapp:app", "--bind", ":0", "--workers", "2",
                        "--on-worker-start", "hookapp:start", "--on-worker-exit", "hookapp:stop",
                        cwd=tmp_path, env={"MARKS": str(marks)})
    workers = server.live_workers()
    _, _, body = http_request(server.port)
    connection, worker_id = body.decode().split()
    assert connection == f"conn-{worker_id}-{workers[int(worker_id)]}"
    names = set(os.listdir(marks))
    assert {f"start-{i}-{pid}" for i, pid in workers.items()} <= names
    assert f"import-{server.proc.pid}" in names  # preloaded: imported once, in the primary
    assert not any(n.startswith("import-") and n != f"import-{server.proc.pid}" for n in names)
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    names = set(os.listdir(marks))
    assert {f"exit-{i}-{pid}" for i, pid in workers.items()} <= names


def test_no_preload_imports_in_each_worker_only(run_server, tmp_path):
    marks = write_app(tmp_path)
    server = run_server("hookapp:app", "--bind", ":0", "--workers", "2", "--no-preload",
                        "--on-worker-start", "hookapp:start", cwd=tmp_path,
                        env={"MARKS": str(marks)})
    workers = server.live_workers()
    names = set(os.listdir(marks))
    assert f"import-{server.proc.pid}" not in names
    assert {f"import-{pid}" for pid in workers.values()} <= names
    assert http_request(server.port)[0] == 200


def test_no_preload_with_a_broken_app_stops_with_a_clear_line(tmp_path):
    env = server_env()
    proc = subprocess.run(
        [sys.executable, "-m", "tailfast", "run", "nosuchmodule:app", "--bind", ":0",
         "--workers", "2", "--no-preload"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30,
    )
    assert proc.returncode == 1, proc.stderr
    assert ("cannot import 'app' from 'nosuchmodule': No module named 'nosuchmodule'"
            in proc.stderr)
    assert "cannot start; stopping" in proc.stderr


def test_bad_hook_is_a_start_up_error(tmp_path):
    write_app(tmp_path)
    env = server_env({"MARKS": str(tmp_path / "marks")})
    proc = subprocess.run(
        [sys.executable, "-m", "tailfast", "run", "hookapp:app", "--bind", ":0",
         "--on-worker-start", "hookapp:nothing"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("tailfast: cannot import 'nothing' from 'hookapp': "
                                   "module 'hookapp' has no attribute 'nothing'")
