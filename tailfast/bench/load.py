"""`tailfast bench load URL`: the C load generator (csrc/loadgen.c) with a command line."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

from tailfast.errors import TailfastError


class BenchError(TailfastError):
    """A benchmark that cannot run as asked (bad URL, unreadable body file)."""


def parse_url(url: str) -> tuple[str, str, str, str]:
    """(host, port, request-target, Host header) of an http:// URL."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise BenchError(f"bench load: only http:// URLs are supported, not {url!r}")
    if not parts.hostname:
        raise BenchError(f"bench load: no host in {url!r}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise BenchError(f"bench load: bad port in {url!r}") from exc
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return parts.hostname, str(port), target, host_header


def build_request(method: str, target: str, host_header: str, headers: list[str],
                  body: bytes | None, close: bool) -> bytes:
    """One complete HTTP/1.1 request; the generator sends these bytes as they are."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    names = set()
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip() or any(c in header for c in "\r\n"):
            raise BenchError(f"bench load: --header wants 'Name: value', not {header!r}")
        names.add(name.strip().lower())
        if name.strip().lower() == "host":
            lines[1] = f"Host: {value.strip()}"
            continue
        lines.append(f"{name.strip()}: {value.strip()}")
    if body is not None and "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    if close and "connection" not in names:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def run_load(url: str, connections: int = 10, duration: float = 10.0, threads: int = 1,
             close: bool = False, pipeline: int = 1, method: str = "GET",
             headers: list[str] | None = None, body: bytes | None = None,
             timeout: float = 2.0) -> dict[str, Any]:
    """Runs the generator and returns its figures (see `--json` for the shape)."""
    from tailfast import _bench

    if connections < 1 or threads < 1 or pipeline < 1 or duration <= 0 or timeout <= 0:
        raise BenchError("bench load: connections, threads, pipeline, duration and timeout "
                         "must be positive")
    if close and pipeline > 1:
        raise BenchError("bench load: --pipeline needs keep-alive (drop --close)")
    host, port, target, host_header = parse_url(url)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BenchError(f"bench load: cannot resolve {host!r}: {exc.strerror}") from None
    method = method.upper()
    request = build_request(method, target, host_header, headers or [], body, close)
    result: dict[str, Any] = _bench.run_load(
        host, port, request, connections=connections, threads=min(threads, connections),
        pipeline=pipeline, duration=duration, timeout=timeout, close_each=close,
        head=method == "HEAD",
    )
    elapsed = result["elapsed"] or duration
    result["url"] = url
    result["settings"] = {
        "connections": connections, "threads": min(threads, connections), "duration": duration,
        "pipeline": pipeline, "keep_alive": not close, "method": method, "timeout": timeout,
    }
    result["requests_per_sec"] = result["requests"] / elapsed
    result["bytes_per_sec"] = result["bytes_read"] / elapsed
    result["errors_total"] = sum(result["errors"].values())
    return result


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def format_text(result: dict[str, Any]) -> str:
    s = result["settings"]
    lat = result["latency_ns"]
    mode = "keep-alive" if s["keep_alive"] else "connection per request"
    if s["pipeline"] > 1:
        mode += f", pipeline {s['pipeline']}"
    lines = [
        f"{s['method']} {result['url']}: {s['connections']} connections on {s['threads']} "
        f"thread(s), {s['duration']:g} s, {mode}",
        f"  requests      {result['requests']} in {result['elapsed']:.2f} s",
        f"  requests/s    {result['requests_per_sec']:.1f}",
        f"  transfer/s    {_size(result['bytes_per_sec'])}",
        "  latency       " + "  ".join(
            f"{name} {_ms(lat[name])}" for name in ("p50", "p90", "p99", "p99.9", "max")),
        f"  latency mean  {_ms(lat['mean'])}",
        "  errors        " + "  ".join(f"{k} {v}" for k, v in result["errors"].items()),
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="http://HOST:PORT/PATH")
    parser.add_argument("-c", "--connections", type=int, default=64,
                        help="open connections (default 64)")
    parser.add_argument("-d", "--duration", type=float, default=10.0,
                        help="seconds of load (default 10)")
    parser.add_argument("-t", "--threads", type=int, default=1,
                        help="generator threads, one epoll loop each (default 1)")
    parser.add_argument("--close", action="store_true",
                        help="a new connection per request (default: keep-alive)")
    parser.add_argument("--pipeline", type=int, default=1, metavar="K",
                        help="send K requests back to back per connection (default 1)")
    parser.add_argument("-m", "--method", default="GET")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="an extra request header (repeatable)")
    parser.add_argument("--body-file", metavar="PATH", help="send this file as the body")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="seconds without progress before a request counts as timed out")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    body = None
    if args.body_file:
        try:
            with open(args.body_file, "rb") as f:
                body = f.read()
        except OSError as exc:
            raise BenchError(f"bench load: --body-file: {exc}") from exc
    try:
        result = run_load(args.url, connections=args.connections, duration=args.duration,
                          threads=args.threads, close=args.close, pipeline=args.pipeline,
                          method=args.method, headers=args.header, body=body,
                          timeout=args.timeout)
    except OSError as exc:
        raise BenchError(f"bench load: {exc.strerror or exc}") from exc
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(format_text(result))
    return 0
