"""The Markdown sections of `python -m bench.report`: figures in, text for the marked places out."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.concurrency import Row
from bench.report_runs import CONNECTIONS
from tailfast.bench.procstat import CpuMeter

NAN = float("nan")


@dataclass
class Context:
    """What every section says beside its table: when, on what, how busy."""

    when: str
    machine: dict[str, Any]
    load: tuple[float, float, float, float]  # before, min and max during, after
    duration: float
    repeat: int
    server_cpus: Sequence[int]
    load_cpus: Sequence[int]
    command: str
    draft: str

    def header(self, how: str) -> str:
        m = self.machine
        before, low, high, after = self.load
        lines = []
        if self.draft:
            lines += [f"**Draft figures, to be regenerated** ({self.draft}): run "
                      "`python -m bench.report` on an idle machine.", ""]
        lines.append(
            f"Measured {self.when} by `{self.command.strip()}` on {m['cpus']} CPU(s) "
            f"({m['cpu_model']}), Linux {m['kernel']}, Python {m['python']}; load average "
            f"(1 min) {before:.2f} before, {low:.2f}–{high:.2f} during, {after:.2f} after. "
            f"{how}")
        return "\n".join(lines)


def draft_reason(args: argparse.Namespace, loads: list[float], defaults: dict[str, float],
                 idle_load: float) -> str:
    """Why these figures are not final, or ''."""
    reasons = []
    if args.duration < defaults["duration"] or args.repeat < defaults["repeat"]:
        reasons.append(f"runs of {args.duration:g} s x {args.repeat}, shorter than the "
                       f"defaults ({defaults['duration']:g} s x {defaults['repeat']:g})")
    # Only the load before the run says whether others used the machine: during
    # it, the server and the generator themselves keep about one task per CPU busy.
    before = loads[0]
    if before > idle_load * args.cpus:
        reasons.append(f"the machine was busy: load average {before:.2f} at the start")
    return "; ".join(reasons)


def cell(value: float, spec: str) -> str:
    return "n/a" if value != value else format(value, spec)


def span(row: Row, key: str, spec: str) -> str:
    low, high = row.spread(key)
    a, b = cell(low, spec), cell(high, spec)
    return a if a == b else f"{a}–{b}"


def ratio(a: float, b: float) -> str:
    return "n/a" if not b or a != a or b != b else f"{a / b:.2f}"


def _cpus(cpus: Sequence[int]) -> str:
    return ",".join(map(str, cpus))


# ------------------------------------------------------------ throughput, targets


def throughput(rows: list[Row], ctx: Context) -> str:
    by = {r.name: r for r in rows}
    tf, ng = by.get("tailfast"), by.get("nginx")
    how = (f"One worker of each server on CPU {_cpus(ctx.server_cpus)}, tailfast's C load "
           f"generator on CPU {_cpus(ctx.load_cpus)}, {CONNECTIONS} keep-alive connections "
           f"(\"close\": a new connection per request), the same hello-world app everywhere "
           f"(bench/apps.py); rounds interleaved; medians of {ctx.repeat} run(s) of "
           f"{ctx.duration:g} s, min–max beside.")
    lines = [ctx.header(how), "",
             "| server (1 worker, 1 core) | requests/s | min–max | p99 ms | min–max "
             "| requests/CPU-s | min–max | vs tailfast (req/s) | vs nginx (req/s) "
             "| vs tailfast (req/CPU-s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if not r.runs:
            lines.append(f"| {r.name} | n/a | | | | | | | | {r.missing} |")
            continue
        rps, cpu = r.median("rps"), r.median("req_per_cpu_s")
        lines.append(
            f"| {r.name} | {cell(rps, ',.0f')} | {span(r, 'rps', ',.0f')} "
            f"| {cell(r.median('p99_ms'), '.2f')} | {span(r, 'p99_ms', '.2f')} "
            f"| {cell(cpu, ',.0f')} | {span(r, 'req_per_cpu_s', ',.0f')} "
            f"| {ratio(rps, tf.median('rps') if tf else NAN)} "
            f"| {ratio(rps, ng.median('rps') if ng else NAN)} "
            f"| {ratio(cpu, tf.median('req_per_cpu_s') if tf else NAN)} |")
    errors = sum(run["errors"] for r in rows for run in r.runs
                 if not r.name.startswith("gunicorn"))
    lines += ["", f"Errors over all runs (gunicorn's closed connections aside): {errors:.0f}. "
              "Requests/CPU-s is requests over the CPU seconds (utime+stime, /proc) of the "
              "server's processes: it does not depend on the share of its core a server got."]
    return "\n".join(lines)


TARGETS = [  # (title, server, against, bound, at least?)
    ("native ≥ 0.90× nginx, keep-alive", "tailfast", "nginx", 0.90, True),
    ("WSGI ≥ 1.0× bjoern", "tailfast-wsgi", "bjoern", 1.0, True),
    ("WSGI ≥ 0.75× nginx", "tailfast-wsgi", "nginx", 0.75, True),
    ("connection per request ≥ 0.80× nginx", "tailfast (close)", "nginx (close)", 0.80, True),
]


def targets(rows: list[Row], ctx: Context) -> str:
    """The targets of docs/performance.md, as ratios of the throughput run's medians."""
    by = {r.name: r for r in rows}
    lines = [throughput(rows, ctx), "",
             "| target | req/s ratio | per CPU-s ratio |", "|---|---:|---:|"]

    def med(name: str, key: str) -> float:
        return by[name].median(key) if name in by else NAN

    for title, a, b, _, _ in TARGETS:
        lines.append(f"| {title} | {ratio(med(a, 'rps'), med(b, 'rps'))} "
                     f"| {ratio(med(a, 'req_per_cpu_s'), med(b, 'req_per_cpu_s'))} |")
    p99 = ratio(med("tailfast", "p99_ms"), med("nginx", "p99_ms"))
    lines.append(f"| p99 ≤ 1.5× nginx's | {p99} | |")
    return "\n".join(lines)


# -------------------------------------------------------------------- speedup


def speedup(report: dict[str, Any], ctx: Context) -> str:
    from tailfast.bench import speedup as sp

    s = report["settings"]
    how = (f"`{report['command']}`: {s['connections']} keep-alive connections, pipeline "
           f"{s['pipeline']} ({s['pipeline_reason']}); medians of {s['repeat']} run(s) of "
           f"{s['duration']:g} s, min–max beside. Requests per server CPU-second is the figure "
           "to compare across rows when the generator shares the cores; the capacity speedup "
           "is that figure times the workers, against 1 worker.")
    lines = [ctx.header(how), "", *sp.table(report)]
    lines += ["", *(f"Note: {n}" for n in report["notes"])]
    return "\n".join(lines)


# ---------------------------------------------------------------- concurrency


def concurrency(cases: list[tuple[str, str, int, list[Any]]], ctx: Context) -> str:
    from bench import concurrency as cc

    how = (f"`python -m bench.concurrency` cases, servers on CPU {_cpus(ctx.server_cpus)}, the "
           f"C generator on CPU {_cpus(ctx.load_cpus)}; medians of {ctx.repeat} interleaved "
           f"round(s) of {ctx.duration:g} s, each server alone on its CPU, min–max of the first "
           f"column beside; server CPU from {CpuMeter.expected_source()}.")
    lines = [ctx.header(how)]
    for case, title, threads, rows in cases:
        _, _, _, _, report = cc.CASES[case]
        lines += ["", f"**{case}**: {title}", "", *report(rows, threads)]
    return "\n".join(lines)


# ------------------------------------------------------ lifecycle, parser, instructions


def _ms_row(name: str, seconds: list[float]) -> str:
    if not seconds:
        return f"| {name} | n/a | |"
    ms = [s * 1e3 for s in seconds]
    return f"| {name} | {statistics.median(ms):.2f} ms | {min(ms):.2f}–{max(ms):.2f} ms |"


def lifecycle(figures: dict[str, Any], ctx: Context) -> str:
    mem = figures["memory"]
    counts = sorted(mem)
    lo, hi = counts[0], counts[-1]
    added = (mem[hi]["total"] - mem[lo]["total"]) / (hi - lo) if hi > lo else NAN
    lines = [ctx.header("Start-up: `tailfast run` to the first 200, one worker per CPU, 5 "
                        "servers; respawn: SIGKILL of a worker that has served to its "
                        "replacement ready in the scoreboard (2 workers); PSS from "
                        "/proc/PID/smaps_rollup after some requests."), "",
             "| figure | median | min–max |", "|---|---:|---:|",
             _ms_row(f"start-up to first response ({ctx.machine['cpus']} workers)",
                     figures["startup"]),
             _ms_row("respawn: SIGKILL to replacement ready", figures["respawn"])]
    for n in counts:
        m = mem[n]
        lines.append(f"| PSS, {n} worker(s): primary / worker / total | {m['primary']:,} / "
                     f"{m['worker']:,} / {m['total']:,} KiB | |")
    lines.append(f"| PSS added per worker | {cell(added, ',.0f')} KiB | |")
    return "\n".join(lines)


def parser(figures: dict[str, list[float]], ctx: Context) -> str:
    base = statistics.median(next(iter(figures.values())))
    lines = [ctx.header(f"One {_request_len()}-byte browser request (bench/parser_request.py, "
                        "11 header fields) parsed again and again; median ns per request "
                        "over the repeats."), "",
             "| parser | ns/request | min–max | vs tailfast C loop |", "|---|---:|---:|---:|"]
    for name, values in figures.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:,.0f} | {min(values):,.0f}–{max(values):,.0f} "
                     f"| {med / base:.2f}x |")
    return "\n".join(lines)


def _request_len() -> int:
    from bench.parser_request import REQUEST

    return len(REQUEST)


def instructions(rows: list[tuple[str, float]], ctx: Context) -> str:
    lines = [ctx.header("User-space instructions of the worker per keep-alive request "
                        "(callgrind, a run of 2N requests minus one of N: start-up cancels "
                        "out). Counted, not timed: the figure does not move with the load; "
                        "timer sweeps and garbage collection run by the clock, so rows move "
                        "by about ±5% between runs."), "",
             "| response | instructions per request |", "|---|---:|"]
    lines += [f"| {label} | {n:,.0f} |" for label, n in rows]
    return "\n".join(lines)


def sections(results: dict[str, Any], ctx: Context) -> dict[str, str]:
    """Section name -> its Markdown; a part that could not run says why."""
    makers = {"throughput": [("throughput", throughput), ("targets", targets)],
              "speedup": [("speedup", speedup)], "concurrency": [("concurrency", concurrency)],
              "lifecycle": [("lifecycle", lifecycle)], "parser": [("parser", parser)],
              "instructions": [("instructions", instructions)]}
    out = {}
    for part, figures in results.items():
        for name, make in makers[part]:
            if isinstance(figures, str):  # why it was not measured
                out[name] = ctx.header("") + f"\n\n{figures}"
            else:
                out[name] = make(figures, ctx)
    return out
