"""The primary against what it cannot trust or control: shared memory written by
workers, failing forks, and workers that do not finish draining."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

from conftest import http_request, pid_alive

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
