"""Builds and runs the C unit tests of csrc/http.c and csrc/log.c.

The parser is plain C with no Python in it, so it is tested as plain C: one
program (tests/c/test_http.c) built with AddressSanitizer and UBSan, which
aborts on the first over-read or undefined behaviour.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SOURCES = [CSRC / "http.c", CSRC / "log.c"]
TEST_SOURCE = ROOT / "tests" / "c" / "test_http.c"

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


def test_c_http_unit_tests_with_sanitizers(tmp_path: Path) -> None:
    cc = _compiler()
    exe = tmp_path / "test_http"
    _compile(
        [cc, *SANITIZE, f"-I{CSRC}", str(TEST_SOURCE), *map(str, SOURCES), "-o", str(exe)],
        tmp_path,
    )
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=env)
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
