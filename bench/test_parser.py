"""The request parser (csrc/http.c) against httptools on the same ~500-byte browser request.

    PYTHONPATH=$PWD pytest bench/test_parser.py --benchmark-columns=min,median,mean,stddev

tailfast's parser has no Python binding, so tailfast._bench.parse_request_loop
parses the buffer N times in a C loop and times the loop in C: ns per request
without any Python call in it (test_tailfast_parse_c_loop, figure in
extra_info and in the printed summary). For a like-for-like view of the call
overhead, the same entry is also benchmarked with N=1 per call, next to
httptools' feed_data (one Python call per request, with and without the
callbacks a server needs to see the URL and headers).
"""

from __future__ import annotations

import statistics

import pytest
from tailfast._bench import parse_request_loop

from bench.parser_request import REQUEST

httptools = pytest.importorskip("httptools")

HEADERS = 11
LOOP = 20_000
results: dict[str, float] = {}


def test_request_is_realistic() -> None:
    assert 480 <= len(REQUEST) <= 520
    assert parse_request_loop(REQUEST, 1)[1] == HEADERS


def test_tailfast_parse_c_loop(benchmark) -> None:
    """ns per request from the C-timed loop (the figure to compare)."""
    per_request: list[float] = []

    def run() -> None:
        elapsed, headers = parse_request_loop(REQUEST, LOOP)
        assert headers == HEADERS
        per_request.append(elapsed / LOOP)

    benchmark.pedantic(run, rounds=30, warmup_rounds=2)
    results["tailfast (C loop)"] = statistics.median(per_request)
    benchmark.extra_info["ns_per_request_median"] = round(results["tailfast (C loop)"], 1)
    benchmark.extra_info["ns_per_request_min"] = round(min(per_request), 1)
    benchmark.extra_info["requests_per_call"] = LOOP


def test_tailfast_parse_one_per_call(benchmark) -> None:
    benchmark(parse_request_loop, REQUEST, 1)
    results["tailfast (1 per Python call)"] = benchmark.stats.stats.median * 1e9


class _Fields:
    """The callbacks a server needs: the URL and every header."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = 0

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.done += 1
        self.headers = []


class _Nothing:
    def __init__(self) -> None:
        self.done = 0

    def on_message_complete(self) -> None:
        self.done += 1


@pytest.mark.parametrize("protocol", [_Nothing, _Fields], ids=["no-callbacks", "url+headers"])
def test_httptools_feed_data(benchmark, protocol) -> None:
    proto = protocol()
    parser = httptools.HttpRequestParser(proto)  # keep-alive: one parser, request after request
    benchmark(parser.feed_data, REQUEST)
    assert proto.done > 0
    name = f"httptools feed_data ({'url+headers' if protocol is _Fields else 'no callbacks'})"
    results[name] = benchmark.stats.stats.median * 1e9


def test_summary(capsys) -> None:
    """Prints the medians side by side (run with -s to see them)."""
    assert results
    base = results.get("tailfast (C loop)")
    with capsys.disabled():
        print(f"\nparser, {len(REQUEST)}-byte request, median ns per request:")
        for name, ns in results.items():
            ratio = f"  ({ns / base:.2f}x tailfast C loop)" if base else ""
            print(f"  {name:44s} {ns:8.1f}{ratio}")
