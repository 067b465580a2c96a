"""`python -m bench.report`: its markers in the docs, the rewrite, and a short run of two parts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import server_env

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402


def test_every_section_has_its_markers_once() -> None:
    """Each section the report writes is marked exactly once in each file that shows it."""
    for name, files in report.PLACES.items():
        for rel in files:
            text = (ROOT / rel).read_text()
            assert text.count(f"<!-- bench.report:{name} -->") == 1, (rel, name)
            assert text.count(f"<!-- /bench.report:{name} -->") == 1, (rel, name)
    assert set(report.PARTS) <= set(report.PLACES)


def test_rewrite_replaces_only_between_markers(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- bench.report:parser -->\nold\ntable\n"
                   "<!-- /bench.report:parser -->\nafter\n")
    assert report.rewrite(doc, {"parser": "new table\n"}) == ["parser"]
    assert doc.read_text() == ("before\n<!-- bench.report:parser -->\nnew table\n"
                               "<!-- /bench.report:parser -->\nafter\n")
    with pytest.raises(SystemExit, match="no markers"):
        report.rewrite(doc, {"speedup": "x"})


def test_short_run_prints_tables_with_machine_and_load(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.report", "--parts", "throughput,parser", "--duration",
         "0.3", "--repeat", "1", "--warmup", "0", "--dry-run"],
        env=server_env(), capture_output=True, text=True, timeout=180, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for section in ("throughput", "targets", "parser"):
        assert f"<!-- {section} -->" in out
    # date, machine and load beside every table; short runs are marked as drafts
    assert out.count("load average (1 min)") == 3
    assert out.count("**Draft figures, to be regenerated**") == 3
    assert "| tailfast | " in out and "| tailfast (close) | " in out
    assert "| native ≥ 0.90× nginx, keep-alive |" in out
    assert "| tailfast, C loop (20,000 per call) |" in out
