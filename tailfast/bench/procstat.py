"""What the kernel knows about a process: CPU seconds and memory (PSS), from /proc."""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of pid so far (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def pss_kib(pid: int) -> int | None:
    """Proportional set size in KiB (shared pages split among their users)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/PID/task/*/children)."""
    found = [pid]
    i = 0
    while i < len(found):
        try:
            tasks = os.listdir(f"/proc/{found[i]}/task")
        except FileNotFoundError:
            tasks = []
        for tid in tasks:
            try:
                with open(f"/proc/{found[i]}/task/{tid}/children") as f:
                    found += [int(c) for c in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                pass
        i += 1
    return found
