"""`tailfast bench speedup` end to end, with tiny durations: the report files and their shape."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import pid_alive, server_env


def test_speedup_writes_markdown_and_json(tmp_path: Path) -> None:
    env = server_env()
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "tailfast", "bench", "speedup", "countapp:app",
         "--workers", "1,2", "-d", "0.5", "--warmup", "0.2", "--repeat", "1",
         "-c", "8", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    # The Markdown table goes to stdout and to report.md.
    assert "| workers | requests/s | speedup |" in proc.stdout
    md = (out / "report.md").read_text()
    assert "| workers | requests/s | speedup |" in md
    rows_md = [line for line in md.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows_md) == 2, md
    # Progress goes to stderr, one line per step when stderr is not a terminal.
    assert "workers=2 run 1/1" in proc.stderr

    report = json.loads((out / "report.json").read_text())
    assert [row["workers"] for row in report["rows"]] == [1, 2]
    assert report["settings"]["repeat"] == 1
    assert report["machine"]["cpus"] == len(os.sched_getaffinity(0))
    one, two = report["rows"]
    # Requests per connection in flight: pipelined when the generator must share
    # cores with the server (as on 2 CPUs), stated beside the table.
    pipeline = report["settings"]["pipeline"]
    shares = len(os.sched_getaffinity(0)) < 3
    assert pipeline == (16 if shares else 1)
    assert f"pipeline {pipeline} (auto:" in md
    assert "load average" in md and report["timestamp"] in md
    assert "| workers | requests/s | speedup | requests/s min–max | requests/CPU-s |" in md
    assert one["speedup"] == 1.0 and one["efficiency"] == 1.0
    assert abs(two["speedup"] - two["requests_per_sec"] / one["requests_per_sec"]) < 1e-9
    for row in report["rows"]:
        assert row["requests"] > 0 and sum(row["errors"].values()) == 0
        assert row["server_cpu_seconds"] > 0
        assert 0 < row["server_cpu_use"] <= 1.05  # clock-tick rounding
        assert row["requests_per_cpu_second"] > 0
        assert len(row["worker_cpu_share"]) == row["workers"]
        assert abs(sum(row["worker_cpu_share"].values()) - 1.0) < 1e-6
        # From the scoreboard: what the workers answered during the measured run,
        # which is what the generator counted plus at most one batch in flight
        # per connection (8 x the pipeline) at the end.
        per_worker = row["requests_per_worker"]
        assert per_worker is not None and len(per_worker) == row["workers"]
        assert all(n > 0 for n in per_worker.values()), per_worker
        slack = 8 * pipeline
        assert 0 <= sum(per_worker.values()) - row["requests"] <= slack, (per_worker,
                                                                          row["requests"])
        assert row["capacity"] == row["requests_per_cpu_second"] * row["workers"]
        assert row["runs_requests_per_cpu_second"], row
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p99"]
    if len(os.sched_getaffinity(0)) < 3:
        # 2 workers + the generator do not fit in 2 CPUs: the report must say so.
        assert two["shared_cores"]
        assert "shared cores" in md
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    assert (out / "speedup.png").exists() == has_mpl
    if not has_mpl:
        assert "matplotlib is not installed" in md


def _pids_with_marker(marker: str) -> list[int]:
    """Processes whose environment holds TF_SPEEDUP_TEST_MARKER=marker."""
    wanted = f"TF_SPEEDUP_TEST_MARKER={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone, or not ours to read
            continue
    return found


def test_speedup_leaves_no_server_behind(tmp_path: Path) -> None:
    """The servers it starts are gone when it returns, even when it fails."""
    # a marker in the environment the servers inherit: finds this test's
    # servers only, not those of anything else running on the machine
    marker = f"{os.getpid()}-{tmp_path.name}"
    env = server_env({"TF_SPEEDUP_TEST_MARKER": marker})
    proc = subprocess.run(
        [sys.executable, "-m", "tailfast", "bench", "speedup", "countapp:app",
         "--workers", "1", "-d", "0.3", "--warmup", "0", "--repeat", "1", "--quiet"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    leftover = [pid for pid in _pids_with_marker(marker) if pid_alive(pid)]
    assert not leftover, leftover
    bad = subprocess.run(
        [sys.executable, "-m", "tailfast", "bench", "speedup", "countapp:app", "--workers", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "--workers" in bad.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "tailfast", "bench", "speedup", "countapp:app",
         "--pipeline", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "--pipeline" in bad.stderr


def test_speedup_pipeline_as_asked(tmp_path: Path) -> None:
    """--pipeline K is used for every row and said so in the report."""
    proc = subprocess.run(
        [sys.executable, "-m", "tailfast", "bench", "speedup", "countapp:app",
         "--workers", "1", "-d", "0.3", "--warmup", "0", "--repeat", "1", "-c", "4",
         "--pipeline", "4", "--quiet", "--out", str(tmp_path)],
        env=server_env(), capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["settings"]["pipeline"] == 4
    assert "pipeline 4 (as asked" in proc.stdout
    row = report["rows"][0]
    assert row["requests"] > 0 and sum(row["errors"].values()) == 0
