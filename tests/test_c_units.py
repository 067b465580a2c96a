"""Builds and runs the C unit tests (tests/c/*.c) and compiles every csrc file warning-free.

The parsers (HTTP, WebSocket) and the access log are plain C with no Python in them, so they are
tested as plain C: one program per unit, built with AddressSanitizer and
UBSan, which aborts on the first over-read or undefined behaviour.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
TESTS_C = ROOT / "tests" / "c"
# test program -> the csrc files it links (each unit with what it calls)
PROGRAMS: dict[str, list[str]] = {
    "test_http": ["http.c", "log.c"],
    "test_accesslog": ["accesslog.c", "log.c"],
    "test_clock": [],  # clock.h is header-only
    "test_websocket": ["websocket.c", "http.c", "log.c"],  # http.c builds its test requests
    # a request body's readers through a whole worker loop
    "test_body": ["worker.c", "accept.c", "conn.c", "serve.c", "body.c", "dispatch.c",
                  "respond.c", "runq.c", "http.c", "log.c", "observe.c", "accesslog.c",
                  "scoreboard.c", "ws_conn.c", "websocket.c"],
}

SANITIZE = [
    "-std=c11",
    "-O1",
    "-g",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
]


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    pytest.skip("no C compiler found")


def _compile(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_c_unit_tests_with_sanitizers(tmp_path: Path, program: str) -> None:
    cc = _compiler()
    exe = tmp_path / program
    sources = [str(TESTS_C / f"{program}.c"), *(str(CSRC / name) for name in PROGRAMS[program])]
    _compile([cc, *SANITIZE, f"-I{CSRC}", *sources, "-o", str(exe)], tmp_path)
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    work = tmp_path / "files"  # where a test program may write (the access log's files)
    work.mkdir()
    without_dir = ("test_http", "test_websocket", "test_body")
    args = [str(exe)] if program in without_dir else [str(exe), str(work)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert " 0 failed" in proc.stdout, output


@pytest.mark.parametrize("source", sorted(CSRC.glob("*.c")), ids=lambda p: p.name)
def test_c_sources_compile_without_warnings(tmp_path: Path, source: Path) -> None:
    cc = _compiler()
    _compile(
        [
            cc,
            "-std=c11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{CSRC}",
            "-c",
            str(source),
            "-o",
            str(tmp_path / (source.stem + ".o")),
        ],
        tmp_path,
    )
