"""`tailfast bench speedup MODULE:CALLABLE`: requests/s at 1..N workers, as one report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tailfast.bench.load import BenchError, run_load
from tailfast.bench.procstat import cpu_model, cpu_seconds
from tailfast.bench.server import BenchServer


def parse_workers(text: str | None, cpus: int) -> list[int]:
    if not text:
        return list(range(1, cpus + 1))
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise BenchError(f"bench speedup: --workers wants counts like 1,2,4, not {text!r}") from exc
    if not counts or counts[0] < 1:
        raise BenchError(f"bench speedup: --workers wants counts >= 1, not {text!r}")
    return counts


def plan_cpus(workers: int, cpus: list[int], load_threads: int,
              pin: bool) -> tuple[list[int] | None, list[int] | None, str]:
    """(server cpus, load generator cpus, description). Disjoint sets when the
    machine has room for both, else both get every CPU and say so."""
    if not pin:
        return None, None, "not pinned"
    if workers + load_threads <= len(cpus):
        load = cpus[-load_threads:]
        server = cpus[:workers]
        return server, load, (f"server on CPU {_cpu_list(server)}, "
                              f"load generator on CPU {_cpu_list(load)}")
    return cpus, cpus, f"shared: server and load generator both on CPU {_cpu_list(cpus)}"


# Requests sent back to back per connection when the generator must share
# cores with the server (TechEmpower's plaintext test pipelines 16): the
# generator's CPU per request, which it takes from the server, drops by about
# that factor, while the server still parses and answers every request.
SHARED_PIPELINE = 16


def choose_pipeline(text: str, counts: list[int], cpus: list[int], load_threads: int,
                    pin: bool) -> tuple[int, str]:
    """(requests per connection in flight, why): --pipeline K as given, or auto:
    SHARED_PIPELINE when any worker count shares cores with the generator, else
    1 (one request at a time, as browsers and proxies send them). One value for
    every row, so that the rows compare."""
    if text != "auto":
        try:
            k = int(text)
        except ValueError:
            k = 0
        if k < 1:
            raise BenchError(f"bench speedup: --pipeline wants auto or a count >= 1, not {text!r}")
        return k, "as asked (--pipeline)"
    shared = [n for n in counts if plan_cpus(n, cpus, load_threads, pin)[2].startswith(
        ("shared", "not pinned"))]
    if shared:
        return SHARED_PIPELINE, (
            f"auto: the generator shares cores with the server at {shared} worker(s), so "
            f"each connection pipelines {SHARED_PIPELINE} requests (as TechEmpower's plaintext "
            "test does) to make the generator cheap per request")
    return 1, "auto: the generator has cores of its own, so one request at a time"


def _cpu_list(cpus: list[int]) -> str:
    return ",".join(map(str, cpus))


def worker_requests(server: BenchServer) -> dict[int, int] | None:
    """Requests answered so far by each worker id, from the server's scoreboard
    (`tailfast status`); None when it cannot be read (an older server)."""
    from tailfast.errors import TailfastError
    from tailfast.status import read_status

    try:
        snapshot = read_status(pid=server.pid)
    except (TailfastError, OSError):
        return None
    counts: dict[int, int] = {}
    for proc in snapshot["processes"]:
        counts[proc["worker_id"]] = counts.get(proc["worker_id"], 0) + int(proc["requests"])
    return counts


def _delta(before: dict[int, int] | None,
           after: dict[int, int] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {str(w): after[w] - before.get(w, 0) for w in sorted(after)}


class Progress:
    """One line on stderr: a bar over the whole plan while the load runs
    (the generator releases the GIL, so this thread can redraw)."""

    def __init__(self, total_seconds: float, enabled: bool) -> None:
        self.total = max(total_seconds, 0.001)
        self.done = 0.0
        self.label = ""
        self.step_start = time.monotonic()
        self.step_len = 0.0
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        if self.tty:
            self._thread.start()

    def step(self, label: str, seconds: float) -> None:
        self.done += self.step_len
        self.step_len = seconds
        self.step_start = time.monotonic()
        self.label = label
        if self.enabled and not self.tty:
            print(f"tailfast bench: {label}", file=sys.stderr, flush=True)
        self._draw()

    def _draw(self) -> None:
        if not self.tty:
            return
        within = min(time.monotonic() - self.step_start, self.step_len)
        frac = min((self.done + within) / self.total, 1.0)
        width = 30
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        sys.stderr.write(f"\r[{bar}] {frac * 100:3.0f}% {self.label:<40}")
        sys.stderr.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            self._draw()

    def close(self) -> None:
        self._stop.set()
        if self.tty:
            self._thread.join(1)
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


def _load_pinned(cpus: list[int] | None, **kwargs: Any) -> dict[str, Any]:
    """run_load with this thread (and so the generator's threads) on cpus."""
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    try:
        return run_load(**kwargs)
    finally:
        os.sched_setaffinity(0, before)


def measure(app: str, workers: int, args: argparse.Namespace, cpus: list[int],
            progress: Progress) -> dict[str, Any]:
    server_cpus, load_cpus, pinning = plan_cpus(workers, cpus, args.threads, not args.no_pin)
    url = None
    runs: list[dict[str, Any]] = []
    with BenchServer(app, workers, server_cpus).wait_ready() as server:
        url = f"http://127.0.0.1:{server.port}{args.path}"
        load = {"url": url, "connections": args.connections, "threads": args.threads,
                "pipeline": args.pipeline_k}
        if args.warmup > 0:
            progress.step(f"workers={workers} warm-up", args.warmup)
            _load_pinned(load_cpus, duration=args.warmup, **load)
        for i in range(args.repeat):
            progress.step(f"workers={workers} run {i + 1}/{args.repeat}", args.duration)
            pids = server.pids()
            server.wait_idle()  # the warm-up's (or last run's) requests all counted
            cpu_before = {pid: cpu_seconds(pid) for pid in pids}
            served_before = worker_requests(server)
            result = _load_pinned(load_cpus, duration=args.duration, **load)
            cpu_after = {pid: cpu_seconds(pid) for pid in pids}
            server.wait_idle()
            result["per_worker"] = _delta(served_before, worker_requests(server))
            result["server_cpu"] = {pid: cpu_after[pid] - cpu_before[pid] for pid in pids}
            runs.append(result)
        worker_pids = dict(server.worker_pids)
    rates = [r["requests_per_sec"] for r in runs]
    per_cpu = [r["requests"] / sum(r["server_cpu"].values()) for r in runs
               if sum(r["server_cpu"].values()) > 0]
    median_rate = statistics.median_low(rates)
    run = runs[rates.index(median_rate)]
    cpu_total = sum(run["server_cpu"].values())
    worker_cpu = {wid: run["server_cpu"].get(pid, 0.0) for wid, pid in sorted(worker_pids.items())}
    worker_cpu_sum = sum(worker_cpu.values()) or 1.0
    return {
        "workers": workers,
        "requests_per_sec": median_rate,
        "runs_requests_per_sec": rates,
        "runs_requests_per_cpu_second": per_cpu,
        "requests": run["requests"],
        "elapsed": run["elapsed"],
        "latency_ms": {k: v / 1e6 for k, v in run["latency_ns"].items()},
        "errors": run["errors"],
        "server_cpu_seconds": cpu_total,
        # Of the CPU time the server could have used (its cores x the run's length).
        "server_cpu_use": cpu_total / (run["elapsed"] * min(workers, len(server_cpus or cpus))),
        "requests_per_cpu_second": run["requests"] / cpu_total if cpu_total > 0 else None,
        # What `workers` fully busy cores would answer at this cost per request:
        # the scaling the server itself shows, whatever share of the cores it got.
        "capacity": run["requests"] / cpu_total * workers if cpu_total > 0 else None,
        "worker_cpu_share": {str(w): c / worker_cpu_sum for w, c in worker_cpu.items()},
        "requests_per_worker": run["per_worker"],
        "pinning": pinning,
        "shared_cores": pinning.startswith("shared"),
    }


def report_notes(rows: list[dict[str, Any]], cpus: list[int], base: float | None,
                 pipeline: int = 1) -> list[str]:
    """What a reader must know to read the rows: shared cores, starved runs, how
    requests per worker were counted."""
    notes = []
    shared = [r["workers"] for r in rows if r["shared_cores"]]
    if shared:
        notes.append(
            f"The load generator and the server shared cores at {shared} worker(s): this "
            f"machine has {len(cpus)} usable CPU(s), too few to give the generator its own. "
            "There the generator's CPU time is taken from the server, so requests/s understate "
            "what the server would do alone and the speedup flattens as workers approach the "
            "core count; requests per server CPU-second stays comparable."
        )
    starved = [f"{r['workers']} ({r['server_cpu_use']:.0%})" for r in rows
               if r["server_cpu_use"] < 0.8]
    if starved:
        notes.append(
            "The server used well under the CPU time open to it at workers "
            f"{', '.join(starved)}: other processes on this machine (or the load generator) "
            "had those cores part of the time, so requests/s in those rows are low and the "
            "speedup between rows is not the server's alone (it can even exceed the worker "
            "count). Requests per server CPU-second does not depend on that; compare it."
        )
    if any(r["requests_per_worker"] for r in rows):
        notes.append(
            "Requests per worker are read from the server's scoreboard before and after the "
            "run, so they include requests still in flight at the end (up to the pipeline "
            "depth per connection); the figure in "
            "brackets is the busiest worker against the mean (1.00 = even)."
        )
    else:
        notes.append(
            "Requests per worker: the server's scoreboard could not be read, so the per-worker "
            "column shows each worker's share of the server's CPU time instead, which shows "
            "imbalance the same way."
        )
    if not base:
        notes.append("Speedup and efficiency need a 1-worker run (--workers 1,...).")
    if pipeline > 1:
        notes.append(
            f"With {pipeline} requests pipelined per connection one read and one writev "
            "serve several requests, so the server's CPU per request is lower than with one "
            "request at a time: compare these rows with each other, not with figures "
            "taken without pipelining.")
    return notes


def command_line(args: argparse.Namespace) -> str:
    """The `tailfast bench speedup` line that repeats this measurement."""
    parts = ["tailfast bench speedup", args.app]
    if args.workers:
        parts += ["--workers", args.workers]
    parts += ["-d", f"{args.duration:g}", "--warmup", f"{args.warmup:g}", "--repeat",
              str(args.repeat), "-c", str(args.connections), "--pipeline", str(args.pipeline)]
    if args.threads != 1:
        parts += ["-t", str(args.threads)]
    if args.path != "/":
        parts += ["--path", args.path]
    if args.no_pin:
        parts.append("--no-pin")
    return " ".join(parts)


def build_report(rows: list[dict[str, Any]], args: argparse.Namespace,
                 cpus: list[int]) -> dict[str, Any]:
    one = rows[0] if rows and rows[0]["workers"] == 1 else None
    base = one["requests_per_sec"] if one else None
    base_capacity = one["capacity"] if one else None
    for row in rows:
        if base:
            row["speedup"] = row["requests_per_sec"] / base
            row["efficiency"] = row["speedup"] / row["workers"]
        else:
            row["speedup"] = row["efficiency"] = None
        row["capacity_speedup"] = (row["capacity"] / base_capacity
                                   if base_capacity and row["capacity"] else None)
    notes = report_notes(rows, cpus, base, args.pipeline_k)
    return {
        "app": args.app,
        "command": command_line(args),
        "machine": {
            "cpus": len(cpus), "cpu_model": cpu_model(), "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "settings": {
            "duration": args.duration, "warmup": args.warmup, "repeat": args.repeat,
            "connections": args.connections, "load_threads": args.threads, "path": args.path,
            "pipeline": args.pipeline_k, "pipeline_reason": args.pipeline_reason,
        },
        "load_average": {"before": list(args.load_before), "after": list(os.getloadavg())},
        "rows": rows,
        "notes": notes,
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _range(values: list[float], spec: str) -> str:
    """min-max of the runs, or the one value."""
    if not values:
        return "n/a"
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}–{high}"


def _per_worker(r: dict[str, Any]) -> str:
    if r["requests_per_worker"]:
        counts = [v for _, v in sorted(r["requests_per_worker"].items(),
                                       key=lambda kv: int(kv[0]))]
        mean = sum(counts) / len(counts)
        text = " / ".join(f"{v:,}" for v in counts)
        return text + (f" ({max(counts) / mean:.2f})" if mean else "")
    shares = " / ".join(f"{v * 100:.0f}%" for v in r["worker_cpu_share"].values())
    return shares + " CPU"


def header_line(report: dict[str, Any]) -> str:
    """When, on what, and how busy the machine was: printed beside every table."""
    m = report["machine"]
    s = report["settings"]
    la = report.get("load_average") or {}
    load = ""
    if la:
        load = (f"; load average {la['before'][0]:.2f} before, {la['after'][0]:.2f} after "
                "(1 min)")
    return (f"{report['timestamp']}, {m['cpus']} CPU(s) ({m['cpu_model']}), Linux "
            f"{m['kernel']}, Python {m['python']}{load}; {s['connections']} keep-alive "
            f"connections, pipeline {s['pipeline']} ({s['pipeline_reason']}); "
            f"{s['duration']:g} s per run, median (and min–max) of {s['repeat']} run(s) "
            f"after {s['warmup']:g} s warm-up.")


def table(report: dict[str, Any]) -> list[str]:
    """The rows as a markdown table: requests/s beside requests per server CPU-second."""
    lines = [
        "| workers | requests/s | speedup | requests/s min–max | requests/CPU-s "
        "| requests/CPU-s min–max | capacity speedup | efficiency | p50 ms | p99 ms "
        "| server CPU s | CPU use | per worker | errors | cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['workers']} | {r['requests_per_sec']:,.0f} | {_fmt(r['speedup'], '.2f')} "
            f"| {_range(r['runs_requests_per_sec'], ',.0f')} "
            f"| {_fmt(r['requests_per_cpu_second'], ',.0f')} "
            f"| {_range(r.get('runs_requests_per_cpu_second', []), ',.0f')} "
            f"| {_fmt(r.get('capacity_speedup'), '.2f')} "
            f"| {_fmt(r['efficiency'], '.0%')} | {r['latency_ms']['p50']:.3f} "
            f"| {r['latency_ms']['p99']:.3f} | {r['server_cpu_seconds']:.2f} "
            f"| {r['server_cpu_use']:.0%} | {_per_worker(r)} "
            f"| {sum(r['errors'].values())} | {r['pinning']} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = [f"### tailfast speedup: `{report['app']}`", ""]
    if report.get("draft"):
        lines += [f"**Draft figures, to be regenerated** ({report['draft']}).", ""]
    lines += [header_line(report), "", *table(report)]
    lines += ["", "Capacity speedup: requests per server CPU-second times the workers, "
              "against 1 worker: what N fully busy cores would answer, whatever share of "
              "them the server got during the run."]
    for note in report["notes"]:
        lines += ["", f"Note: {note}"]
    lines += ["", f"Reproduce: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def write_png(report: dict[str, Any], path: Path) -> str | None:
    """Draws requests/s, the capacity (requests/CPU-s x workers) and the ideal
    against workers; returns why not when it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "speedup.png skipped: matplotlib is not installed (pip install 'tailfast[report]')"
    rows = report["rows"]
    workers = [r["workers"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(workers, [r["requests_per_sec"] for r in rows], "o-", label="requests/s")
    capacity = [r["capacity"] for r in rows]
    if all(c is not None for c in capacity):
        ax.plot(workers, capacity, "s-", color="tab:green",
                label="requests/CPU-s × workers (capacity)")
    if rows and rows[0]["workers"] == 1:
        base = capacity[0] or rows[0]["requests_per_sec"]
        ax.plot(workers, [base * w for w in workers], "--", color="grey", label="ideal")
    ax.set_xlabel("workers")
    ax.set_ylabel("requests/s")
    ax.set_xticks(workers)
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    s = report["settings"]
    ax.set_title(f"tailfast {report['app']} on {report['machine']['cpus']} CPU(s), "
                 f"pipeline {s['pipeline']}, {report['timestamp'][:10]}"
                 + ("\ndraft: to be regenerated on an idle machine" if report.get("draft")
                    else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="MODULE:CALLABLE")
    parser.add_argument("--workers", help="worker counts, e.g. 1,2,4 (default: 1..CPUs)")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up load")
    parser.add_argument("--repeat", type=int, default=3, help="runs per count (median kept)")
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("-t", "--threads", type=int, default=1,
                        help="load generator threads (and the CPUs reserved for it)")
    parser.add_argument("--path", default="/", help="request path")
    parser.add_argument("--pipeline", default="auto", metavar="K|auto",
                        help=f"requests sent back to back per connection; auto: "
                        f"{SHARED_PIPELINE} when the generator shares cores with the server, "
                        "else 1")
    parser.add_argument("--out", metavar="DIR", help="write report.md, report.json, speedup.png")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and generator")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measures every worker count of args; returns the report (also used by bench.report)."""
    cpus = sorted(os.sched_getaffinity(0))
    counts = parse_workers(args.workers, len(cpus))
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0 or args.threads < 1:
        raise BenchError("bench speedup: --repeat, --duration and --threads must be positive")
    if not args.path.startswith("/"):
        raise BenchError("bench speedup: --path must start with /")
    args.pipeline_k, args.pipeline_reason = choose_pipeline(
        str(args.pipeline), counts, cpus, args.threads, not args.no_pin)
    args.load_before = os.getloadavg()
    total = len(counts) * (args.warmup + args.repeat * args.duration + 1.0)
    progress = Progress(total, enabled=not args.quiet)
    rows = []
    try:
        for n in counts:
            progress.step(f"workers={n} starting", 1.0)
            rows.append(measure(args.app, n, args, cpus, progress))
    finally:
        progress.close()
    return build_report(rows, args, cpus)


def write_out(report: dict[str, Any], out: Path) -> str:
    """report.json, speedup.png and report.md in out; returns the markdown written."""
    text = markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    why_not = write_png(report, out / "speedup.png")
    if why_not:
        text += f"\n{why_not}\n"
        print(why_not, file=sys.stderr)
    else:
        text += "\n![speedup](speedup.png)\n"
    (out / "report.md").write_text(text)
    return text


def main(args: argparse.Namespace) -> int:
    report = run(args)
    sys.stdout.write(markdown(report))
    if args.out:
        write_out(report, Path(args.out))
    return 0
