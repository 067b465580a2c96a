"""bench/concurrency.py end to end with tiny durations, so the script does not rot (no timing)."""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec

import pytest
from conftest import ROOT, server_env


def run_bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.concurrency", "--duration", "0.5", "--repeat", "1",
         "--warmup", "0", *args],
        env=server_env(), capture_output=True, text=True, timeout=120, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def rows(out: str, case: str) -> dict[str, list[str]]:
    """Row name -> cells of the first table after the case's heading."""
    section = out.split(f"## {case}:", 1)[1]
    found: dict[str, list[str]] = {}
    for line in section.split("\n\n", 2)[1].splitlines()[2:]:
        name, *cells = (c.strip() for c in line.strip("|").split("|"))
        found[name] = cells
    return found


def check_ran(cells: list[str], what: str) -> None:
    """A row with figures (requests answered, none failed), or one that says why not."""
    if cells[-1] == "tailfast rejects --threads":
        return
    assert float(cells[0]) >= 0 and cells[-1] == "0", (what, cells)


def test_every_case_runs_against_tailfast() -> None:
    out = run_bench("--only", "tailfast")
    for case, names in (("wait", ["tailfast inline", "tailfast --threads 16",
                                  "tailfast-wsgi --threads 16"]),
                        ("mixed", ["tailfast inline", "tailfast --threads 8",
                                   "tailfast-wsgi --threads 8"]),
                        ("hello", ["tailfast --threads 1", "tailfast --threads 4"])):
        table = rows(out, case)
        assert list(table) == names, out
        for name in names:
            check_ran(table[name], f"{case}: {name}")
    assert "tailfast inline" in rows(out, "wait") and "load average" in out
    assert "vs --threads 1, req per CPU-s" in out


def test_peers_run() -> None:
    for peer in ("gunicorn", "granian"):
        if find_spec(peer) is None:
            pytest.skip(f"{peer} is not installed (pip install -e '.[bench]')")
    out = run_bench("--cases", "mixed", "--only", "gunicorn,granian")
    table = rows(out, "mixed")
    assert list(table) == ["gunicorn gthread --threads 8", "granian --blocking-threads 8"], out
    for name, cells in table.items():
        check_ran(cells, name)
    assert "| gunicorn gthread --threads 8 |" in out.split("| vs granian |", 1)[1]
