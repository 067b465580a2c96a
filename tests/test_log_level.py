"""--log-level: a real server leaves out the lines below the level and keeps the errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import http_request, wait_until

from tailfast.errors import TailfastError
from tailfast.status import read_status


def _snapshot(pid_file: Path) -> dict[str, Any] | None:
    try:
        return read_status(pid_file=str(pid_file))
    except TailfastError:
        return None


def start_quiet(run_server: Any, tmp_path: Path, level: str) -> tuple[Any, int]:
    """A one-worker server at level, found through its pid file and scoreboard
    (its "listening on" line is info: not written above that level)."""
    pid_file = tmp_path / "tailfast.pid"
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1", "--log-level", level,
                        "--pid-file", str(pid_file), wait=False)

    def ready() -> bool:
        snapshot = _snapshot(pid_file) if pid_file.exists() else None
        return bool(snapshot and any(p["ready"] for p in snapshot["processes"]))

    assert wait_until(ready, timeout=15), server.output
    snapshot = _snapshot(pid_file)
    assert snapshot is not None
    server.seen_pids.update(p["pid"] for p in snapshot["processes"])  # stopped at the end
    port = int(re.search(r":(\d+)$", snapshot["listen"])[1])
    return server, port


def request_error(server: Any, port: int) -> None:
    """A handler that raises: a 500 and its traceback, logged at level error."""
    status, _, _ = http_request(port, path="/raise")
    assert status == 500
    server.wait_for(r"tailfast: worker 1: error in handler for GET /raise")
    server.wait_for(r"RuntimeError: handler failed on purpose")


def test_warning_level_leaves_out_info_and_keeps_errors(run_server: Any, tmp_path: Path) -> None:
    server, port = start_quiet(run_server, tmp_path, "warning")
    request_error(server, port)
    assert "Traceback (most recent call last)" in server.output
    assert "listening on" not in server.output


def test_error_level_keeps_errors(run_server: Any, tmp_path: Path) -> None:
    server, port = start_quiet(run_server, tmp_path, "error")
    request_error(server, port)
    assert "listening on" not in server.output


def test_warning_level_leaves_out_the_c_lifecycle_lines(run_server: Any, tmp_path: Path) -> None:
    server, port = start_quiet(run_server, tmp_path, "warning")
    request_error(server, port)
    assert not re.search(r"worker \d+ \(pid \d+\) (started|ready in)", server.output)


def test_info_level_is_the_default(run_server: Any) -> None:
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1")
    status, _, _ = http_request(server.port, path="/raise")
    assert status == 500
    server.wait_for(r"RuntimeError: handler failed on purpose")
    assert re.search(r"worker 1 \(pid \d+\) started", server.output)
