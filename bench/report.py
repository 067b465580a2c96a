"""Every figure of README.md, bench/README.md and docs/performance.md from one run, in place.

    python -m bench.report [--duration 4] [--repeat 3] [--parts throughput,speedup,...]
    python -m bench.report --duration 0.5 --repeat 1 --dry-run     # a quick check

Run it once on an idle machine. It measures, in this order, with the same
build and the same load generator (tailfast's C generator, csrc/loadgen.c):

- throughput: one worker of each server (tailfast native and WSGI, bjoern,
  nginx `return 200`, uvicorn+httptools, gunicorn sync) on --server-cpus, the
  generator on --load-cpus, 64 keep-alive connections (and nginx and tailfast
  with a connection per request); rounds interleaved. One run gives the README
  table and the targets of docs/performance.md, so the figures compared agree.
- speedup: `tailfast bench speedup` at 1..N workers (pipelined when the
  generator must share cores), and the chart docs/speedup.png.
- concurrency: bench/concurrency.py's three cases (issue 13).
- lifecycle: start-up, respawn after SIGKILL, memory (PSS) per worker.
- parser: ns per request head, tailfast against httptools.
- instructions: user-space instructions per request (callgrind).

Each figure is a median with the min-max of the runs beside it, and every
table is printed with the date, the machine (CPU model, cores, kernel) and the
load average before, during and after the run. Unless --dry-run, each section
replaces the text between `<!-- bench.report:NAME -->` and
`<!-- /bench.report:NAME -->` in the files that hold it. Runs shorter than the
defaults, or on a machine whose load average was above 1 during the run, are
marked as drafts in the text they write.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import report_format as fmt
from bench import report_runs as runs

ROOT = Path(__file__).resolve().parent.parent
# section name -> the files (from the repository root) that show it
PLACES = {
    "throughput": ["README.md", "bench/README.md"],
    "targets": ["docs/performance.md"],
    "speedup": ["README.md", "docs/performance.md"],
    "concurrency": ["bench/README.md"],
    "lifecycle": ["bench/README.md", "docs/performance.md"],
    "parser": ["bench/README.md"],
    "instructions": ["bench/README.md", "docs/performance.md"],
}
PARTS = ["throughput", "speedup", "concurrency", "lifecycle", "parser", "instructions"]
DEFAULTS = {"duration": 4.0, "repeat": 3}
# A machine busier than this at the start (1-minute load average per CPU) makes the run a
# draft.
IDLE_LOAD = 0.5


class LoadWatch:
    """The 1-minute load average before, during (sampled each second) and after."""

    def __init__(self) -> None:
        self.before = os.getloadavg()[0]
        self.samples = [self.before]
        self.after = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.after = os.getloadavg()[0]
        self.samples.append(self.after)


@contextmanager
def pinned(cpus: Sequence[int]) -> Iterator[None]:
    """This process (and the generator threads it starts) on cpus meanwhile."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def machine() -> dict[str, Any]:
    from tailfast.bench.procstat import cpu_model

    return {"cpus": len(os.sched_getaffinity(0)), "cpu_model": cpu_model(),
            "kernel": platform.release(), "python": platform.python_version()}


def speedup_report(args: argparse.Namespace) -> dict[str, Any]:
    """`tailfast bench speedup bench.apps:native` at 1..CPUs (main writes docs/speedup.png)."""
    from tailfast.bench import speedup

    sargs = argparse.Namespace(
        app="bench.apps:native", workers=None, duration=args.duration, warmup=args.warmup,
        repeat=args.repeat, connections=runs.CONNECTIONS, threads=1, path="/",
        pipeline="auto", no_pin=False, quiet=True)
    return speedup.run(sargs)


def concurrency_rows(args: argparse.Namespace) -> list[tuple[str, str, int, list[Any]]]:
    """bench/concurrency.py's cases: (case, title, threads, rows) each."""
    from bench import concurrency

    cargs = argparse.Namespace(duration=args.duration, repeat=args.repeat,
                               warmup=min(args.warmup, 0.5), server_cpus=args.server_cpus)
    out = []
    for case, (title, workers, threads, connections, _) in concurrency.CASES.items():
        specs = concurrency.servers(case, threads, workers)
        out.append((case, title, threads,
                    concurrency.run_case(case, specs, cargs, connections)))
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every part asked for, in order; the generator on the load CPUs except
    for the speedup, which plans its own CPUs."""
    parts = {
        "throughput": lambda: runs.throughput(args.server_cpus, args.duration, args.repeat,
                                              args.warmup),
        "speedup": lambda: speedup_report(args),
        "concurrency": lambda: concurrency_rows(args),
        "lifecycle": lambda: {"startup": runs.startup(len(os.sched_getaffinity(0)), 5),
                              "respawn": runs.respawn(max(5, 5 * args.repeat)),
                              "memory": runs.memory(sorted({1, max(2, args.cpus)}))},
        "parser": lambda: runs.parser(max(3, args.repeat)),
        "instructions": lambda: runs.instructions(args.instructions_requests),
    }
    results: dict[str, Any] = {}
    for name in args.parts:
        if name == "speedup":
            results.update(runs.run_parts({name: parts[name]}))
            continue
        with pinned(args.load_cpus):
            results.update(runs.run_parts({name: parts[name]}))
    return results


def rewrite(path: Path, sections: dict[str, str]) -> list[str]:
    """Replaces each marked section of path that sections has; returns the names
    written. A section without its markers in the file is an error."""
    text = path.read_text()
    written = []
    for name, body in sections.items():
        pattern = re.compile(
            rf"(<!-- bench\.report:{name} -->\n).*?(<!-- /bench\.report:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"bench.report: {path} has no markers for section {name!r}")
        text = pattern.sub(lambda m, b=body: m.group(1) + b.rstrip() + "\n" + m.group(2), text)
        written.append(name)
    path.write_text(text)
    return written


def write_sections(sections: dict[str, str]) -> None:
    for rel in sorted({f for name in sections for f in PLACES[name]}):
        mine = {name: body for name, body in sections.items() if rel in PLACES[name]}
        names = rewrite(ROOT / rel, mine)
        print(f"bench.report: rewrote {rel}: {', '.join(names)}", file=sys.stderr)


def cpu_list(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    cpus = sorted(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--duration", type=float, default=DEFAULTS["duration"],
                        help="seconds per run")
    parser.add_argument("--repeat", type=int, default=DEFAULTS["repeat"],
                        help="runs per figure (interleaved rounds)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up load")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="comma-separated, of: " + ", ".join(PARTS))
    parser.add_argument("--instructions-requests", type=int, default=2000,
                        help="requests per callgrind run (the figure is 2N minus N)")
    parser.add_argument("--server-cpus", type=cpu_list, default=cpus[:-1] or cpus)
    parser.add_argument("--load-cpus", type=cpu_list, default=cpus[-1:])
    parser.add_argument("--dry-run", action="store_true",
                        help="print the sections, write no file")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    if args.repeat < 1 or args.duration <= 0:
        parser.error("--repeat and --duration must be positive")
    args.cpus = len(cpus)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())  # the run's start
    watch = LoadWatch()
    try:
        results = measure(args)
    finally:
        watch.stop()
    context = fmt.Context(
        when=when, machine=machine(),
        load=(watch.before, min(watch.samples), max(watch.samples), watch.after),
        duration=args.duration, repeat=args.repeat, server_cpus=args.server_cpus,
        load_cpus=args.load_cpus, command="python -m bench.report" + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        draft=fmt.draft_reason(args, watch.samples, DEFAULTS, IDLE_LOAD))
    sections = fmt.sections(results, context)
    for name, body in sections.items():
        print(f"\n<!-- {name} -->\n{body}")
    print(f"\nbench.report: {time.monotonic() - started:.0f} s", file=sys.stderr)
    if not args.dry_run:
        write_sections(sections)
        if isinstance(results.get("speedup"), dict):
            from tailfast.bench import speedup

            results["speedup"]["draft"] = context.draft
            speedup.write_out(results["speedup"], ROOT / "docs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
