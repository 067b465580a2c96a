"""The HTTP parser alone (csrc/http.c), as plain C: nanoseconds per request head."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.conftest import record

ROOT = Path(__file__).resolve().parent.parent


def test_parser(benchmark: Any, tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "parser_bench"
    subprocess.run([cc, "-O2", "-DNDEBUG", f"-I{ROOT / 'csrc'}", str(ROOT / "bench" /
                    "parser_bench.c"), str(ROOT / "csrc" / "http.c"), "-o", str(exe)],
                   check=True, timeout=120)
    out: list[str] = []
    benchmark.pedantic(lambda: out.append(subprocess.run(
        [str(exe), "2000000"], capture_output=True, text=True, check=True).stdout),
        rounds=3, iterations=1)
    ns = sorted(float(re.match(r"([\d.]+) ns/parse", o).group(1)) for o in out)  # type: ignore[union-attr]
    size = int(re.search(r"(\d+) bytes", out[0]).group(1))  # type: ignore[union-attr]
    figures = {"ns_per_parse": ns[len(ns) // 2], "bytes": size,
               "MB_per_s": size / ns[len(ns) // 2] * 1e3}
    benchmark.extra_info.update(figures)
    record("parser", f"tf_parse_request ({size} B head)", figures)
