"""What the kernel knows about a process: CPU seconds and memory (PSS), from /proc and cgroups."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

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


def _cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified
    on a hybrid system), or None."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if fields[2] == "cgroup2":
                    return Path(fields[1])
    except OSError:
        pass
    return None


class CpuMeter:
    """The CPU seconds a set of processes spends from now on.

    /proc's utime+stime come in clock ticks (10 ms): a run that costs the server
    0.1 s is then read to +-10%. So the processes are moved into a cgroup v2 of
    their own, whose cpu.stat counts microseconds, threads that end meanwhile
    included; close() moves them back. Without a writable cgroup v2 (no root, no
    mount) it falls back to the ticks, and says so in `source`."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self.group: Path | None = None
        self.homes: dict[int, Path] = {}
        self.final: float | None = None  # the figure at close()
        root = _cgroup2_root()
        if root is not None:
            try:
                self._enter(root)
            except OSError:
                self._leave()
        self.source = "cgroup v2 cpu.stat (us)" if self.group else "/proc ticks (10 ms)"
        self.start = self._read()

    @staticmethod
    def expected_source() -> str:
        """What meters will read here, for a report's header."""
        root = _cgroup2_root()
        usable = root is not None and os.access(root / "cgroup.procs", os.W_OK)
        return "cgroup v2 cpu.stat (us)" if usable else "/proc ticks (10 ms)"

    def _enter(self, root: Path) -> None:
        group = root / f"tailfast-bench-{os.getpid()}-{id(self)}"
        group.mkdir()
        self.group = group
        for pid in self.pids:
            with open(f"/proc/{pid}/cgroup") as f:
                home = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
            self.homes[pid] = root / home.lstrip("/")
            (group / "cgroup.procs").write_text(str(pid))

    def _read(self) -> float:
        if self.group is None:
            return sum(map(cpu_seconds, self.pids))
        for line in (self.group / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
        raise RuntimeError(f"no usage_usec in {self.group}/cpu.stat")

    def seconds(self) -> float:
        """CPU seconds since the meter was made (until close(), if closed)."""
        return self._read() - self.start if self.final is None else self.final

    def close(self) -> None:
        """Moves the processes back where they were and removes the cgroup."""
        if self.final is None:
            self.final = self._read() - self.start
        self._leave()

    def _leave(self) -> None:
        if self.group is None:
            return
        for pid, home in self.homes.items():
            try:
                (home / "cgroup.procs").write_text(str(pid))
            except OSError:  # it has exited
                pass
        try:
            self.group.rmdir()
        except OSError:  # a child forked meanwhile is still in it; it goes with the server
            pass
        self.group = None

    def __enter__(self) -> CpuMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
