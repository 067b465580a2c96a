"""Health and readiness answered in C, and the Prometheus metrics endpoint."""

from __future__ import annotations

import os
import signal
import socket
import threading

import pytest
from conftest import http_request, pid_alive, wait_until

from tailfast.status import read_status

parser = pytest.importorskip("prometheus_client.parser")

PROBES = ("--health-path", "/healthz", "--ready-path", "/readyz", "--metrics-path", "/metrics")


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The metrics, parsed by prometheus-client: sample name -> labels -> value."""
    status, headers, body = http_request(port, path="/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    families = list(parser.text_string_to_metric_families(body.decode("utf-8")))
    assert families, body
    for family in families:
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def one(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_health_and_ready_are_answered_without_the_application(run_server):
    server = run_server("deployapp:broken", "--bind", ":0", "--workers", "1", *PROBES)
    for path, body in (("/healthz", b"ok\n"), ("/readyz", b"ready\n")):
        status, headers, data = http_request(server.port, path=path)
        assert (status, data) == (200, body)
        assert headers["cache-control"] == "no-store"
        status, headers, data = http_request(server.port, "HEAD", path)
        assert status == 200 and data == b"" and headers["content-length"] == str(len(body))
    # the application is broken, and the probes did not call it
    assert "the application is down" not in server.output
    assert http_request(server.port, path="/other")[0] == 500
    assert http_request(server.port, path="/healthz?x=1")[0] == 200  # the query is ignored
    assert http_request(server.port, "POST", "/healthz", b"x")[0] == 500  # not a probe: the app
    assert "the application is down" in server.output


def test_probe_paths_are_off_by_default(run_server):
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "1")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert http_request(server.port, path=path)[2] == b"ok"  # the application's answer


def test_readiness_turns_503_while_draining(run_server):
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "1", *PROBES)
    assert http_request(server.port, path="/readyz")[0] == 200
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as probe, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as busy:
        # one connection keeps a request in flight (the drain lasts), the
        # other is accepted and sends its probe once the stop has begun
        busy.sendall(b"GET /slow?1.0 HTTP/1.1\r\nHost: x\r\n\r\n")
        server.wait_busy("GET", "/slow")
        server.signal(signal.SIGTERM)
        server.wait_for("stopping gracefully")
        server.wait_state(lambda s: s["stopping"], "the stop shown in the scoreboard")
        probe.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = probe.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable"), answer
        assert b"Connection: close" in answer and answer.endswith(b"stopping\n")
        assert busy.recv(65536).startswith(b"HTTP/1.1 200 OK")  # in flight: finished
    assert server.wait(15) == 0


def test_metrics_count_requests_statuses_and_latency(run_server):
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "2", *PROBES)
    sent = {"2xx": 0, "4xx": 0, "5xx": 0}
    for i in range(12):
        code = (200, 404, 503)[i % 3]
        assert http_request(server.port, path=f"/status/{code}")[0] == code
        sent[f"{code // 100}xx"] += 1
    assert http_request(server.port, path="/slow?0.3")[0] == 200
    sent["2xx"] += 1
    assert http_request(server.port, path="/healthz")[0] == 200
    sent["2xx"] += 1
    # a request the parser rejects: answered (and counted) without dispatch
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"NOT A REQUEST\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    sent["4xx"] += 1

    m = scrape(server.port)
    dispatched = sum(sent.values()) - 1  # the 400 never reached dispatch
    assert one(m, "tailfast_requests_total") == dispatched
    for cls, count in sent.items():
        assert one(m, "tailfast_responses_total", code=cls) == count, cls
    assert one(m, "tailfast_responses_total", code="3xx") == 0
    per_worker = m["tailfast_worker_requests_total"]
    assert sorted(dict(k)["worker"] for k in per_worker) == ["1", "2"]
    assert sum(per_worker.values()) == dispatched
    # histogram: cumulative, consistent, and the 0.3 s request between 0.25 and 0.5
    histogram = m["tailfast_request_duration_seconds_bucket"]
    buckets = {float(dict(k)["le"]): v for k, v in histogram.items()}
    values = [buckets[b] for b in sorted(buckets)]
    assert values == sorted(values)
    assert buckets[float("inf")] == one(m, "tailfast_request_duration_seconds_count")
    assert buckets[float("inf")] == sum(sent.values())
    assert buckets[0.5] - buckets[0.25] == 1
    assert 0.3 <= one(m, "tailfast_request_duration_seconds_sum") < 1.0
    assert one(m, "tailfast_requests_in_flight") == 1  # this scrape
    assert one(m, "tailfast_workers") == 2
    ready = [one(m, "tailfast_processes", state=state) for state in ("idle", "busy")]
    assert sum(ready) == 2
    assert one(m, "tailfast_listen_queue_capacity") == 2048
    assert one(m, "tailfast_listen_queue_depth") >= 0
    assert one(m, "tailfast_stopping") == 0


def test_metrics_survive_worker_restarts_and_count_their_causes(run_server):
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "2", *PROBES)
    for _ in range(10):
        http_request(server.port, path="/")
    before = scrape(server.port)
    total = one(before, "tailfast_requests_total")
    assert total == 10
    assert one(before, "tailfast_worker_restarts_total", cause="crash") == 0

    # the scrape is counted once its handler returned, just after its answer
    # was sent: wait for that before killing a worker
    assert wait_until(lambda: sum(p["requests"] for p in read_status(server.proc.pid)["processes"])
                      == total + 1)
    victim = server.live_workers()[1]
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker 1 \(pid {victim}\) killed by signal 9; restarting", timeout=5)
    server.wait_replaced(1, victim, timeout=5)
    assert not pid_alive(victim)
    after = scrape(server.port)
    # the killed worker's requests are still counted (the first scrape too)
    assert one(after, "tailfast_requests_total") == total + 1
    assert one(after, "tailfast_worker_restarts_total", cause="crash") == 1

    server.signal(signal.SIGHUP)
    server.wait_for(r"retiring pid", count=2, timeout=15)
    server.wait_state(lambda s: [p["generation"] for p in s["processes"]] == [1, 1],
                      "the retired workers gone")
    rolled = scrape(server.port)
    assert one(rolled, "tailfast_processes", state="draining") == 0
    assert one(rolled, "tailfast_worker_restarts_total", cause="rolling_restart") == 2
    assert one(rolled, "tailfast_generation") == 1
    assert one(rolled, "tailfast_requests_total") >= total + 2


def test_metrics_under_concurrent_load_stay_consistent(run_server):
    server = run_server("deployapp:status_app", "--bind", ":0", "--workers", "2", *PROBES)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for _ in range(40):
                http_request(server.port, path="/")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    scrapes = 0
    while any(t.is_alive() for t in threads) and scrapes < 50:
        m = scrape(server.port)
        scrapes += 1
        assert one(m, "tailfast_request_duration_seconds_count") >= 0
    for t in threads:
        t.join(30)
    assert not errors
    m = scrape(server.port)
    assert one(m, "tailfast_responses_total", code="2xx") == 160 + scrapes
