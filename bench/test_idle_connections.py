"""Idle connections on the shared socket (issue 18): 3,000 opened one after another against 2
and 4 workers in about the time `--balance reuseport` takes (no connect over 0.5 s, which would
be a SYN dropped for a full queue), and 20 requests afterwards all answered at once."""

from __future__ import annotations

import pytest

from bench.conftest import record
from bench.idle_connections import measure

CONNECTIONS = 3000
FACTOR = 3.0  # "within a small factor" of one SO_REUSEPORT queue per worker


@pytest.mark.parametrize("workers", [2, 4])
def test_idle_connections_are_accepted_as_fast_as_with_reuseport(workers: int) -> None:
    shared = measure(CONNECTIONS, workers, "shared", None)
    reuseport = measure(CONNECTIONS, workers, "reuseport", None)
    record("idle connections", f"{CONNECTIONS}, {workers} workers",
           {"shared_s": shared.opened_in, "reuseport_s": reuseport.opened_in,
            "shared_slow_connects": shared.slow_connects,
            "shared_unanswered": shared.unanswered})
    assert shared.slow_connects == 0, shared
    assert shared.unanswered == 0, shared
    assert shared.opened_in <= FACTOR * reuseport.opened_in + 0.1, (shared, reuseport)
