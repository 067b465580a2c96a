"""The settings table, the C config structs and the C limits agree (no server processes)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from tailfast import _core, config, metrics
from tailfast.config import SETTINGS, default_config, load_config
from tailfast.server import Launch

CSRC = Path(__file__).resolve().parent.parent / "csrc"
C_STRUCTS = {"worker": "tf_worker_config", "supervisor": "tf_supervisor_config"}

LAUNCH = Launch(listen_fd=7, listen_url="http://127.0.0.1:8000", inherited=False,
                scoreboard_path="/dev/shm/x.scoreboard", notify_socket="/run/notify")

# For each setting that reaches C: a value other than its default, and what C gets.
OTHER_VALUES: dict[str, tuple[str, Any]] = {
    "workers": ("3", 3),
    "graceful_timeout": ("7.5", 7.5),
    "keepalive_timeout": ("2", 2.0),
    "header_timeout": ("3", 3.0),
    "body_timeout": ("4", 4.0),
    "request_timeout": ("6", 6.0),
    "timeout": ("9", 9.0),
    "timeout_grace": ("1.5", 1.5),
    "shutdown_delay": ("2", 2.0),
    "limit_request_body": ("1k", 1024),
    "ws_max_message_size": ("64k", 65536),
    "ws_ping_interval": ("2.5", 2.5),
    "limit_request_line": ("100", 100),
    "limit_request_fields": ("7", 7),
    "limit_request_field_size": ("200", 200),
    "max_connections": ("50", 50),
    "threads": ("4", 4),
    "balance": ("reuseport", 0),
    "max_requests": ("10", 10),
    "max_requests_jitter": ("5", None),  # checked below: random per worker
    "max_rss": ("3", 3 * 1024 * 1024),  # MiB -> bytes
    "health_path": ("/healthz", "/healthz"),
    "ready_path": ("/ready", "/ready"),
    "metrics_path": ("/metrics", "/metrics"),
    "access_log": ("-", "-"),
    "access_log_format": ("common", 0),  # TF_LOG_COMMON
    "log_level": ("warning", 30),
}


def _declarations(body: str) -> list[tuple[str, str]]:
    """(type, name) of each member declared in a C struct body (comments removed)."""
    members = []
    for statement in body.split(";"):
        statement = " ".join(statement.split())
        if not statement:
            continue
        head, *more = statement.split(",")
        match = re.fullmatch(r"(.*?[\s*])(\w+)\s*(\[[^\]]*\])?", head)
        assert match, f"cannot read the C declaration {statement!r}"
        kind = match[1].replace("*", " ").split()[-1]
        members.append((kind, match[2]))
        members += [(kind, re.sub(r"[^\w]", "", name.split("[")[0])) for name in more]
    return members


def c_struct_fields(name: str, prefix: str) -> set[str]:
    """Every field of the C struct typedef'd as name in csrc/*.h, nested structs
    expanded: {"worker.limits.max_request_line", ...}."""
    text = "\n".join(path.read_text() for path in sorted(CSRC.glob("*.h")))
    text = re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)
    bodies = {
        tag or alias: body
        for tag, body, alias in re.findall(r"struct\s*(\w*)\s*\{([^{}]*)\}\s*(\w*)\s*;", text)
    }
    assert name in bodies, f"no struct {name} in {CSRC}/*.h"
    fields = set()
    for kind, member in _declarations(bodies[name]):
        if kind in bodies:
            fields |= c_struct_fields(kind, f"{prefix}.{member}")
        else:
            fields.add(f"{prefix}.{member}")
    return fields


def c_fields(settings_config: Any, launch: Launch | None = LAUNCH, **kwargs: int) -> dict:
    return _core.c_config_fields(settings_config, launch, **kwargs)


def test_every_c_field_is_filled_from_a_setting_or_derived() -> None:
    declared = {s.c_field for s in SETTINGS if s.c_field}
    derived = set(_core.DERIVED_C_FIELDS)
    assert not declared & derived
    assert set(c_fields(default_config())) == declared | derived


def test_no_field_of_the_c_structs_is_left_out() -> None:
    in_headers: set[str] = set()
    for prefix, struct in C_STRUCTS.items():
        in_headers |= c_struct_fields(struct, prefix)
    filled = {name for name in c_fields(default_config()) if name.split(".")[0] in C_STRUCTS}
    assert filled == in_headers


def test_the_c_structs_get_the_defaults_of_the_table(tmp_path: Path) -> None:
    values = c_fields(load_config({}, environ={}, cwd=tmp_path))
    assert values["worker.keepalive_timeout"] == 5.0
    assert values["worker.max_body_size"] == 16 * 1024 * 1024
    assert values["worker.ws_max_message_size"] == 16 * 1024 * 1024
    assert values["worker.limits.max_header_count"] == 100
    assert values["worker.health_path"] is None  # "" is off: NULL for C
    assert values["worker.max_requests"] == 0
    assert values["worker.balance"] == 1
    assert values["supervisor.timeout_grace"] == 5.0
    assert values["supervisor.max_rss"] == 0
    assert values["tf_accesslog_open.path"] == ""  # no access log
    assert values["tf_accesslog_open.format"] == 1  # TF_LOG_COMBINED
    assert values["tf_log_set_level.level"] == 20  # info


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_each_setting_reaches_its_c_field(tmp_path: Path, name: str) -> None:
    setting = config.SETTINGS_BY_NAME[name]
    raw, expected = OTHER_VALUES[name]
    before = c_fields(load_config({}, environ={}, cwd=tmp_path))[setting.c_field]
    cli = {name: raw}
    if name == "max_requests_jitter":
        cli["max_requests"] = "10"
        random.seed(12)
        expected = 10 + random.randint(0, 5)
        random.seed(12)
    after = c_fields(load_config(cli, environ={}, cwd=tmp_path))[setting.c_field]
    assert after == expected
    if name != "max_requests_jitter":
        assert after != before


def test_every_setting_reaching_c_is_tried() -> None:
    assert set(OTHER_VALUES) == {s.name for s in SETTINGS if s.c_field}


def test_derived_fields(tmp_path: Path) -> None:
    c = default_config()
    values = c_fields(c, worker_id=2)
    assert values["worker.worker_id"] == 2
    assert values["worker.listen_fd"] == 7 and values["supervisor.listen_fd"] == 7
    assert values["worker.accepts_per_wakeup"] > 0
    assert values["supervisor.boot_timeout"] > 0
    assert values["supervisor.http"] == 1
    assert values["supervisor.stop_filter"] == 1
    assert values["supervisor.notify_socket"] == "/run/notify"
    assert values["tf_scoreboard_create.path"] == "/dev/shm/x.scoreboard"
    assert values["tf_scoreboard_create.listen"] == "http://127.0.0.1:8000"

    # a worker's own SO_REUSEPORT socket: no shared queue, no filter to attach
    reuseport = load_config({"balance": "reuseport"}, environ={}, cwd=tmp_path)
    values = c_fields(reuseport, worker_id=1, own_fd=11)
    assert values["worker.listen_fd"] == 11 and values["supervisor.listen_fd"] == -1
    assert values["supervisor.stop_filter"] == 0

    # an inherited socket outlives this server: its queue is left alone
    inherited = Launch(7, "http://127.0.0.1:8000", True, None, None)
    values = c_fields(c, inherited)
    assert values["supervisor.stop_filter"] == 0
    assert values["supervisor.notify_socket"] is None
    assert values["tf_scoreboard_create.path"] is None

    # spawn_workers: no HTTP, no socket
    values = c_fields(c, None)
    assert values["supervisor.http"] == 0
    assert values["worker.listen_fd"] == -1 and values["supervisor.listen_fd"] == -1
    assert values["supervisor.stop_filter"] == 0


def test_python_mirrors_of_c_limits() -> None:
    mirrors = {
        "TF_SB_MAX_WORKERS": config.MAX_WORKERS,
        "TF_MAX_HEADERS": config.MAX_HEADER_FIELDS,
        "TF_CAUSE_COUNT": len(_core._CAUSES),
        "status classes": len(metrics.STATUS_CLASSES),
    }
    assert mirrors == _core.C_LIMITS
