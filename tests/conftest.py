"""Fixtures that run real tailfast servers in real processes on 127.0.0.1 (the
harness itself is tailfast/testing.py, shared with bench/)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailfast.testing import (  # noqa: F401 - the names tests import from here
    LISTENING,
    ROOT,
    TEST_APPS,
    Load,
    Response,
    ResponseReader,
    Server,
    children,
    connect,
    cpu_seconds,
    fd_count,
    http_request,
    parse_head,
    parse_response,
    parse_whole,
    pid_alive,
    raw_exchange,
    read_response,
    read_scoreboard,
    ready_count,
    rss_kib,
    server_env,
    wait_until,
)

APPS = TEST_APPS


@pytest.fixture
def run_server() -> Iterator[object]:
    """run_server(*args, env=..., cwd=..., wait=True, prefix=..., pass_fds=...)
    starts `tailfast run` (waiting until every worker is ready unless wait is
    false); all are stopped at the end of the test, and the test fails if any
    process is left."""
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None,
              wait: bool = True, prefix: list[str] | None = None,
              pass_fds: tuple[int, ...] = ()) -> Server:
        server = Server(list(args), env=env, cwd=cwd, prefix=prefix or (), pass_fds=pass_fds)
        servers.append(server)
        if wait:
            server.wait_listening()
        return server

    yield start
    leftovers = []
    for server in servers:
        server.stop()
        leftovers += server.leftovers()
    assert not leftovers, f"processes left behind: {leftovers}"


def own_nofile_at_least(count: int) -> None:
    """This test process may open count descriptors (or the test is skipped)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= count:
        return
    if hard != resource.RLIM_INFINITY and hard < count:
        pytest.skip(f"the hard open files limit {hard} is below the {count} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def preload_library(tmp_path: Path, name: str, source: str) -> Path:
    """source (C that wraps a libc call for LD_PRELOAD) built as tmp_path/name.so;
    the test is skipped without a C compiler."""
    cc = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)),
              None)
    if cc is None:
        pytest.skip("no C compiler found")
    source_path, library = tmp_path / f"{name}.c", tmp_path / f"{name}.so"
    source_path.write_text(source)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", str(source_path), "-o", str(library), "-ldl"],
                   check=True, capture_output=True, timeout=120)
    return library
