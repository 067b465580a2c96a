"""The `tailfast bench` subcommands, hooked into tailfast/cli.py."""

from __future__ import annotations

import argparse
from typing import Any


def add_bench_parser(commands: Any) -> None:
    from tailfast.bench import load, speedup

    bench = commands.add_parser(
        "bench", help="load generator and speedup reports",
        description="Measure a server: `load` drives one URL, `speedup` runs an app "
        "at 1..N workers and reports the scaling.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    sub.required = True
    load_p = sub.add_parser(
        "load", help="HTTP load generator (C, epoll, keep-alive)",
        description="Drive URL with the C load generator and report requests/s, transfer "
        "rate, latency percentiles and errors by kind.",
    )
    load.add_arguments(load_p)
    load_p.set_defaults(bench_main=load.main)
    speedup_p = sub.add_parser(
        "speedup", help="requests/s at 1..N workers, as a report",
        description="Start `tailfast run MODULE:CALLABLE` at each worker count, load it, and "
        "report requests/s, speedup, efficiency, latency and server CPU time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    speedup.add_arguments(speedup_p)
    speedup_p.set_defaults(bench_main=speedup.main)
