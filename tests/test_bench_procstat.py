"""CpuMeter (tailfast/bench/procstat.py): a child's CPU, an ended thread's included; cleanup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tailfast.bench.procstat import CpuMeter, cpu_seconds

# Burns CPU in a thread that ends, says so, then waits to be told to exit.
CHILD = """
import sys, threading
def burn():
    n = 0
    for i in range(3_000_000):
        n += i
t = threading.Thread(target=burn)
sys.stdin.readline()
t.start(); t.join()
print("burnt", flush=True)
sys.stdin.readline()
"""


def home_cgroup(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))


def test_meter_counts_a_thread_that_ended_and_puts_the_process_back() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        home = home_cgroup(child.pid)
        meter = CpuMeter([child.pid])
        group = meter.group
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "burnt\n"
        spent = meter.seconds()
        ticks = cpu_seconds(child.pid)  # the kernel's own count, in 10 ms ticks
        meter.close()
        # the burning thread has ended; its time still counts, and agrees with /proc
        assert spent > 0.02, meter.source
        assert abs(spent - ticks) < 0.05 + 0.5 * ticks, (spent, ticks, meter.source)
        assert home_cgroup(child.pid) == home
        if group is not None:
            assert not Path(group).exists()
        assert meter.seconds() >= spent  # closed: the figure at close() stays
    finally:
        child.kill()
        child.wait(10)
