"""Every setting declared once, and where its value comes from.

One table, SETTINGS, drives the command-line options, the environment
variables, the .env files, `--help`, the Config class and what C reads (each
row's c_field, filled by tailfast/_settings.pxi). Precedence, highest first:

    CLI flag > process environment > .env.<mode> > .env > default

The mode (`--env`, else TAILFAST_ENV in the environment, else TAILFAST_ENV in
.env, else "production") chooses which `.env.<mode>` file is read on top of
`.env`. This module must not import the C extension.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any

from dotenv.parser import parse_stream
from dotenv.variables import parse_variables

from tailfast.errors import ConfigError
from tailfast.log import LEVELS as LOG_LEVELS

__all__ = [
    "SETTINGS",
    "BindAddress",
    "NEEDS_RESTART",
    "Config",
    "Setting",
    "add_arguments",
    "available_cpus",
    "default_config",
    "load_config",
    "parse_bind",
    "reread_config",
]

DEFAULT_MODE = "production"
MODE_VARIABLE = "TAILFAST_ENV"
ENV_FILE_VARIABLE = "TAILFAST_ENV_FILE"


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class BindAddress:
    """Where to listen: a TCP host and port, or a unix socket path."""

    family: socket.AddressFamily
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def address(self) -> str:
        """The address as a user writes it: `127.0.0.1:8000`, `[::1]:8000`, `unix:/x.sock`."""
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        if self.family == socket.AF_INET6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """For display: `http://127.0.0.1:8000`, `http://[::1]:8000` or `unix:/x.sock`."""
        if self.family == socket.AF_UNIX:
            return self.address
        return f"http://{self.address}"

    def __str__(self) -> str:
        return self.address


BIND_EXPECTED = "expected HOST:PORT, [IPv6]:PORT, :PORT or unix:PATH"


def _parse_port(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(BIND_EXPECTED)
    port = int(text)
    if port > 65535:
        raise ValueError("expected a port from 0 to 65535")
    return port


def parse_bind(value: str) -> BindAddress:
    """Parses HOST:PORT, :PORT, [IPv6]:PORT or unix:PATH; raises ValueError."""
    text = value.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path or "\0" in path:
            raise ValueError("expected unix:PATH with a non-empty PATH")
        return BindAddress(socket.AF_UNIX, path=path)
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(BIND_EXPECTED)
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(BIND_EXPECTED) from None
        return BindAddress(socket.AF_INET6, host=str(address), port=_parse_port(port))
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:
        raise ValueError(BIND_EXPECTED)
    if host in ("", "localhost"):
        host = "127.0.0.1"
    else:
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(BIND_EXPECTED) from None
    return BindAddress(socket.AF_INET, host=host, port=_parse_port(port))


def _int_in(low: int, high: int, expected: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        text = value.strip()
        if not re.fullmatch(r"[+]?[0-9]+", text) or not low <= int(text) <= high:
            raise ValueError(expected)
        return int(text)

    return parse


# Every duration's upper bound. The C side waits in poll/epoll_wait, whose int
# milliseconds end at about 24.8 days (past it the wait wrapped: every stalled
# write failed after 1 ms); a day is far below that and above any sane timeout.
MAX_SECONDS = 86400.0


def _seconds(minimum: float, *, strict: bool, expected: str) -> Callable[[str], float]:
    """A duration in seconds: finite, > (strict) or >= minimum, at most MAX_SECONDS."""
    expected = f"{expected}, at most {MAX_SECONDS:g} (one day)"

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(expected) from None
        if (not math.isfinite(number) or number < minimum or (strict and number == minimum)
                or number > MAX_SECONDS):
            raise ValueError(expected)
        return number

    return parse


# The watchdog wakes every threshold/4: below this it would cost CPU for nothing.
MIN_STALL_WARNING = 0.05
STALL_EXPECTED = (f"expected seconds >= {MIN_STALL_WARNING:g} (0 = off), "
                  f"at most {MAX_SECONDS:g} (one day)")


def _parse_stall_warning(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(STALL_EXPECTED) from None
    if number != 0 and not MIN_STALL_WARNING <= number <= MAX_SECONDS:  # NaN fails too
        raise ValueError(STALL_EXPECTED)
    return number


def _choice(*choices: str) -> Callable[[str], str]:
    expected = "expected one of " + ", ".join(choices)

    def parse(value: str) -> str:
        text = value.strip().lower()
        if text not in choices:
            raise ValueError(expected)
        return text

    return parse


# Mirrors of C limits (tailfast.h), checked against the extension by
# tests/test_settings_c.py: this module does not import the extension.
MAX_WORKERS = 1024  # TF_SB_MAX_WORKERS: scoreboard slots
WORKERS_EXPECTED = "expected a positive integer or 'auto'"


def _parse_workers(value: str) -> str:
    """Validates the requested worker count; returns "auto" or the number as text."""
    text = value.strip().lower()
    if text == "auto":
        return text
    if not re.fullmatch(r"[+]?[0-9]+", text) or int(text) < 1:
        raise ValueError(WORKERS_EXPECTED)
    if int(text) > MAX_WORKERS:
        raise ValueError(f"expected a positive integer up to {MAX_WORKERS} or 'auto'")
    return str(int(text))


MAX_HEADER_FIELDS = 100  # TF_MAX_HEADERS: the C parser's header array
# Lines are bounded so that a connection's memory stays bounded.
MAX_LINE_LIMIT = 1 << 20

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
SIZE_EXPECTED = "expected a number of bytes >= 0 (0 = unlimited), optionally with suffix k, m or g"


def _parse_size(value: str) -> int:
    match = re.fullmatch(r"\s*([0-9]+)\s*([kmg]?)\s*", value, re.IGNORECASE)
    if not match:
        raise ValueError(SIZE_EXPECTED)
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def _parse_mode(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value) or value in (".", ".."):
        raise ValueError("expected a name of letters, digits, '_', '.' or '-'")
    return value


def _parse_script_name(value: str) -> str:
    text = value.strip().rstrip("/")
    if text and (not text.startswith("/") or any(c in text for c in "?#%\0 ")):
        raise ValueError("expected a path prefix such as /api")
    return text


def _parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_hook(value: str) -> str:
    text = value.strip()
    module, sep, attr = text.partition(":")
    if text and (not sep or not module or not attr):
        raise ValueError("expected MODULE:CALLABLE")
    return text


def _parse_fd(value: str) -> int:
    """An inherited descriptor number, or -1 for none (the empty default)."""
    text = value.strip()
    if not text:
        return -1
    if not re.fullmatch(r"[+]?[0-9]+", text) or not 0 <= int(text) <= 1_000_000:
        raise ValueError("expected a file descriptor number >= 0")
    return int(text)


def _parse_path(value: str) -> str:
    if "\0" in value:
        raise ValueError("expected a file path")
    return value


def _parse_url_path(value: str) -> str:
    """A request path answered by the server itself ("" = off)."""
    text = value.strip()
    if text and (not text.startswith("/") or not re.fullmatch(r"/[!-~]*", text) or "?" in text):
        raise ValueError("expected a path starting with '/' (no spaces, no query), or '' for off")
    return text


def _parse_list(value: str) -> tuple[str, ...]:
    """Comma-separated items (a repeated flag's values are joined with commas)."""
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    if any("\0" in item for item in items):
        raise ValueError("expected comma-separated paths or globs")
    return items


def _parse_allow_ips(value: str) -> str:
    from tailfast.proxy import parse_allow_ips

    parse_allow_ips(value)  # raises ValueError with what is expected
    return ",".join(part.strip() for part in value.split(",") if part.strip())


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Setting:
    """One setting: how it is named, parsed, defaulted, documented, and where C reads it."""

    name: str
    value_type: Any  # the type of its value in Config
    parse: Callable[[str], Any]
    default: str  # raw text, parsed like any other value
    flags: tuple[str, ...]
    env: tuple[str, ...]  # environment variable names, first wins
    help: str
    metavar: str
    const: str | None = None  # a flag taking no value stores this text (e.g. --no-preload)
    multiple: bool = False  # the flag may be repeated: its values are joined with commas
    # Where C reads it, filled by tailfast/_settings.pxi: a field of the C config
    # structs ("worker.…", "worker.limits.…", "supervisor.…") or an argument of
    # another C call ("tf_accesslog_open.path"); None when only Python reads it.
    c_field: str | None = None

    @property
    def flag(self) -> str:
        """The long flag, used to name the source of a value."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0])


SETTINGS: tuple[Setting, ...] = (
    Setting(
        name="bind",
        value_type=BindAddress,
        parse=parse_bind,
        default="127.0.0.1:8000",
        flags=("--bind", "-b"),
        env=("TAILFAST_BIND",),
        help="address to listen on: HOST:PORT, :PORT, [IPv6]:PORT or unix:PATH "
        "(port 0 = any free port)",
        metavar="ADDRESS",
    ),
    Setting(
        name="workers",
        value_type=int,  # resolved: "auto" is a number in Config (workers_requested keeps the text)
        parse=_parse_workers,
        default="auto",
        flags=("--workers", "-w"),
        env=("TAILFAST_WORKERS", "WORKERS"),
        help="number of worker processes, or 'auto' for one per CPU this process may use",
        metavar="N",
        c_field="supervisor.workers",
    ),
    Setting(
        name="backlog",
        value_type=int,
        parse=_int_in(1, 65535, "expected an integer from 1 to 65535"),
        default="2048",
        flags=("--backlog",),
        env=("TAILFAST_BACKLOG",),
        help="listen backlog: connections the kernel queues before they are accepted",
        metavar="N",
    ),
    Setting(
        name="graceful_timeout",
        value_type=float,
        parse=_seconds(0.0, strict=False, expected="expected seconds >= 0"),
        default="30",
        flags=("--graceful-timeout",),
        env=("TAILFAST_GRACEFUL_TIMEOUT",),
        help="seconds a stopping worker may take to finish in-flight requests",
        metavar="SECONDS",
        c_field="supervisor.graceful_timeout",
    ),
    Setting(
        name="keepalive_timeout",
        value_type=float,
        parse=_seconds(0.0, strict=False, expected="expected seconds >= 0"),
        default="5",
        flags=("--keepalive-timeout",),
        env=("TAILFAST_KEEPALIVE_TIMEOUT",),
        help="seconds an idle keep-alive connection stays open",
        metavar="SECONDS",
        c_field="worker.keepalive_timeout",
    ),
    Setting(
        name="header_timeout",
        value_type=float,
        parse=_seconds(0.0, strict=True, expected="expected seconds > 0"),
        default="10",
        flags=("--header-timeout",),
        env=("TAILFAST_HEADER_TIMEOUT",),
        help="seconds allowed to receive a request's head, from its first byte "
        "(from the accept for a new connection); then 408 and close",
        metavar="SECONDS",
        c_field="worker.header_timeout",
    ),
    Setting(
        name="body_timeout",
        value_type=float,
        parse=_seconds(0.0, strict=True, expected="expected seconds > 0"),
        default="30",
        flags=("--body-timeout",),
        env=("TAILFAST_BODY_TIMEOUT",),
        help="longest pause allowed between two reads of a request body; then 408 and close",
        metavar="SECONDS",
        c_field="worker.body_timeout",
    ),
    Setting(
        name="request_timeout",
        value_type=float,
        parse=_seconds(0.0, strict=True, expected="expected seconds > 0"),
        default="60",
        flags=("--request-timeout",),
        env=("TAILFAST_REQUEST_TIMEOUT",),
        help="seconds allowed to receive a whole request (head and body), and the "
        "longest a response write may stall",
        metavar="SECONDS",
        c_field="worker.request_timeout",
    ),
    Setting(
        name="timeout",
        value_type=float,
        parse=_seconds(0.0, strict=False, expected="expected seconds >= 0 (0 = no limit)"),
        default="30",
        flags=("--timeout", "-t"),
        env=("TAILFAST_TIMEOUT",),
        help="seconds a handler may run: past it, tailfast.RequestTimeout is raised in the "
        "handler and the client gets a 503; a worker whose handler still runs "
        "--timeout-grace later (stuck in C code) is killed and replaced (0 = no limit)",
        metavar="SECONDS",
        c_field="supervisor.timeout",
    ),
    Setting(
        name="timeout_grace",
        value_type=float,
        parse=_seconds(0.0, strict=True, expected="expected seconds > 0"),
        default="5",
        flags=("--timeout-grace",),
        env=("TAILFAST_TIMEOUT_GRACE",),
        help="seconds a timed-out handler has to return before its worker is killed",
        metavar="SECONDS",
        c_field="supervisor.timeout_grace",
    ),
    Setting(
        # 0.5 s: far above a healthy loop's turn (milliseconds; a full GC of a large
        # heap stays under ~0.1 s), so a warning means a real blocking call, and far
        # below what users notice as a hang; a stall of 1.25 x this is always caught
        # (tailfast/watchdog.py). Only Python reads it (the watchdog thread).
        name="loop_stall_warning",
        value_type=float,
        parse=_parse_stall_warning,
        default="0.5",
        flags=("--loop-stall-warning",),
        env=("TAILFAST_LOOP_STALL_WARNING",),
        help="log a warning with the Python stack that holds a worker's event loop "
        "(ASGI, async handlers) when it has not come back for this many seconds, and "
        "count it in the metrics (0 = off)",
        metavar="SECONDS",
    ),
    Setting(
        name="shutdown_delay",
        value_type=float,
        parse=_seconds(0.0, strict=False, expected="expected seconds >= 0"),
        default="0",
        flags=("--shutdown-delay",),
        env=("TAILFAST_SHUTDOWN_DELAY",),
        help="seconds to keep accepting after SIGTERM (for load balancers to notice) "
        "before the graceful stop begins; a second SIGTERM ends the delay",
        metavar="SECONDS",
        c_field="supervisor.shutdown_delay",
    ),
    Setting(
        name="fd",
        value_type=int,
        parse=_parse_fd,
        default="",
        flags=("--fd",),
        env=("TAILFAST_FD",),
        help="serve on this inherited listening socket instead of --bind (systemd socket "
        "activation through LISTEN_FDS/LISTEN_PID is detected without it)",
        metavar="N",
    ),
    Setting(
        name="limit_request_body",
        value_type=int,
        parse=_parse_size,
        default="16m",
        flags=("--limit-request-body",),
        env=("TAILFAST_LIMIT_REQUEST_BODY",),
        help="largest request body in bytes, with optional suffix k, m or g (0 = unlimited)",
        metavar="BYTES",
        c_field="worker.max_body_size",
    ),
    Setting(
        name="limit_request_line",
        value_type=int,
        parse=_int_in(16, MAX_LINE_LIMIT, f"expected an integer from 16 to {MAX_LINE_LIMIT}"),
        default="8190",
        flags=("--limit-request-line",),
        env=("TAILFAST_LIMIT_REQUEST_LINE",),
        help="longest request line in bytes (method, target, version); longer is 414",
        metavar="BYTES",
        c_field="worker.limits.max_request_line",
    ),
    Setting(
        name="limit_request_fields",
        value_type=int,
        parse=_int_in(1, MAX_HEADER_FIELDS, f"expected an integer from 1 to {MAX_HEADER_FIELDS}"),
        default="100",
        flags=("--limit-request-fields",),
        env=("TAILFAST_LIMIT_REQUEST_FIELDS",),
        help="most header fields in a request; more is 431",
        metavar="N",
        c_field="worker.limits.max_header_count",
    ),
    Setting(
        name="limit_request_field_size",
        value_type=int,
        parse=_int_in(16, MAX_LINE_LIMIT, f"expected an integer from 16 to {MAX_LINE_LIMIT}"),
        default="8190",
        flags=("--limit-request-field-size",),
        env=("TAILFAST_LIMIT_REQUEST_FIELD_SIZE",),
        help="longest header field line in bytes (name, colon and value); longer is 431",
        metavar="BYTES",
        c_field="worker.limits.max_header_field",
    ),
    Setting(
        name="ws_max_message_size",
        value_type=int,
        parse=_parse_size,
        default="16m",  # as uvicorn's --ws-max-size and the websockets package
        flags=("--ws-max-message-size",),
        env=("TAILFAST_WS_MAX_MESSAGE_SIZE",),
        help="largest WebSocket message in bytes (all its fragments), with optional suffix "
        "k, m or g; a larger one closes the connection with 1009 (0 = unlimited)",
        metavar="BYTES",
        c_field="worker.ws_max_message_size",
    ),
    Setting(
        name="ws_ping_interval",
        value_type=float,
        parse=_seconds(0.0, strict=False, expected="expected seconds >= 0"),
        default="20",  # as uvicorn's --ws-ping-interval
        flags=("--ws-ping-interval",),
        env=("TAILFAST_WS_PING_INTERVAL",),
        help="seconds a WebSocket may be silent before the server pings it; without "
        "a pong within as long again it is closed with 1011 (0 = no pings)",
        metavar="SECONDS",
        c_field="worker.ws_ping_interval",
    ),
    Setting(
        name="threads",
        value_type=int,
        parse=_int_in(1, 1024, "expected an integer from 1 to 1024"),
        default="1",
        flags=("--threads",),
        env=("TAILFAST_THREADS",),
        help="threads per worker that run sync handlers (native and WSGI) while the worker's "
        "loop goes on serving other connections; 1 runs each request inline in the loop",
        metavar="N",
        c_field="worker.threads",
    ),
    Setting(
        name="max_connections",
        value_type=int,
        parse=_int_in(1, 1_000_000, "expected an integer from 1 to 1000000"),
        default="10000",
        flags=("--max-connections",),
        env=("TAILFAST_MAX_CONNECTIONS",),
        help="open connections per worker",
        metavar="N",
        c_field="worker.max_connections",
    ),
    Setting(
        name="interface",
        value_type=str,
        parse=_choice("auto", "native", "wsgi", "asgi"),
        default="auto",
        flags=("--interface",),
        env=("TAILFAST_INTERFACE",),
        help="application interface: native handler(request) (def or async def), wsgi, "
        "asgi (ASGI 3), or auto-detect",
        metavar="{auto,native,wsgi,asgi}",
    ),
    Setting(
        name="loop",
        value_type=str,
        parse=_choice("auto", "asyncio", "uvloop"),
        default="auto",
        flags=("--loop",),
        env=("TAILFAST_LOOP",),
        help="event loop for ASGI apps and async def handlers, one per worker: uvloop when "
        "installed (auto), or asyncio's own",
        metavar="{auto,asyncio,uvloop}",
    ),
    Setting(
        name="script_name",
        value_type=str,
        parse=_parse_script_name,
        default="",
        flags=("--script-name",),
        env=("TAILFAST_SCRIPT_NAME", "SCRIPT_NAME"),
        help="URL prefix a WSGI app is mounted below (its SCRIPT_NAME), e.g. /api",
        metavar="PREFIX",
    ),
    Setting(
        name="env",
        value_type=str,
        parse=_parse_mode,
        default=DEFAULT_MODE,
        flags=("--env",),
        env=(MODE_VARIABLE,),
        help="mode: selects .env.<mode>, read on top of .env",
        metavar="MODE",
    ),
    Setting(
        name="env_file",
        value_type=str,
        parse=_parse_path,
        default="",
        flags=("--env-file",),
        env=(ENV_FILE_VARIABLE,),
        help=".env file to read instead of ./.env (./.env.<mode> is still read)",
        metavar="PATH",
    ),
    Setting(
        name="log_level",
        value_type=str,
        parse=_choice(*LOG_LEVELS),
        default="info",
        flags=("--log-level",),
        env=("TAILFAST_LOG_LEVEL",),
        help="log verbosity",
        metavar="{debug,info,warning,error}",
        c_field="tf_log_set_level.level",
    ),
    Setting(
        name="balance",
        value_type=str,
        parse=_choice("shared", "reuseport"),
        default="shared",
        flags=("--balance",),
        env=("TAILFAST_BALANCE",),
        help="how connections reach workers: one shared socket with fair accepts, or "
        "one SO_REUSEPORT socket per worker (the kernel hashes connections)",
        metavar="{shared,reuseport}",
        c_field="worker.balance",
    ),
    Setting(
        name="max_requests",
        value_type=int,
        parse=_int_in(0, 2**62, "expected an integer >= 0 (0 = never)"),
        default="0",
        flags=("--max-requests",),
        env=("TAILFAST_MAX_REQUESTS",),
        help="replace a worker after it answered this many requests (its replacement "
        "is ready before it stops; 0 = never)",
        metavar="N",
        c_field="worker.max_requests",
    ),
    Setting(
        name="max_requests_jitter",
        value_type=int,
        parse=_int_in(0, 2**62, "expected an integer >= 0"),
        default="0",
        flags=("--max-requests-jitter",),
        env=("TAILFAST_MAX_REQUESTS_JITTER",),
        help="add a random 0..J to each worker's --max-requests, so workers are not "
        "replaced all at once",
        metavar="J",
        c_field="worker.max_requests",
    ),
    Setting(
        name="max_rss",
        value_type=int,
        parse=_int_in(0, 2**40, "expected MiB as an integer >= 0 (0 = no limit)"),
        default="0",
        flags=("--max-rss",),
        env=("TAILFAST_MAX_RSS",),
        help="replace a worker whose resident memory exceeds this many MiB (0 = no limit)",
        metavar="MIB",
        c_field="supervisor.max_rss",
    ),
    Setting(
        name="pid_file",
        value_type=str,
        parse=_parse_path,
        default="",
        flags=("--pid-file",),
        env=("TAILFAST_PID_FILE",),
        help="write the primary's pid to this file (read by `tailfast status --pid-file`)",
        metavar="PATH",
    ),
    Setting(
        name="on_worker_start",
        value_type=str,
        parse=_parse_hook,
        default="",
        flags=("--on-worker-start",),
        env=("TAILFAST_ON_WORKER_START",),
        help="hook(worker_id) run in each worker after fork, before it accepts: "
        "open database and cache connections here",
        metavar="MODULE:CALLABLE",
    ),
    Setting(
        name="on_worker_exit",
        value_type=str,
        parse=_parse_hook,
        default="",
        flags=("--on-worker-exit",),
        env=("TAILFAST_ON_WORKER_EXIT",),
        help="hook(worker_id) run in each worker when it stops serving (after a drain)",
        metavar="MODULE:CALLABLE",
    ),
    Setting(
        name="preload",
        value_type=bool,
        parse=_parse_bool,
        default="true",
        flags=("--no-preload",),
        env=("TAILFAST_PRELOAD",),
        help="import the application in each worker instead of once in the primary "
        "(uses more memory; the primary never runs application code)",
        metavar="",
        const="false",
    ),
    Setting(
        name="factory",
        value_type=bool,
        parse=_parse_bool,
        default="false",
        flags=("--factory",),
        env=("TAILFAST_FACTORY",),
        help="MODULE:CALLABLE names a factory: call it with no arguments and serve what it "
        "returns (same as writing MODULE:CALLABLE())",
        metavar="",
        const="true",
    ),
    Setting(
        name="cpu_max_path",
        value_type=str,
        parse=_parse_path,
        default="",
        flags=("--cpu-max-path",),
        env=("TAILFAST_CPU_MAX_PATH",),
        help="cgroup cpu.max file to read instead of the detected one (for testing)",
        metavar="PATH",
    ),
    Setting(
        name="health_path",
        value_type=str,
        parse=_parse_url_path,
        default="",
        flags=("--health-path",),
        env=("TAILFAST_HEALTH_PATH",),
        help="GET/HEAD on this path answers 200 from the worker's C loop, without the "
        "application (liveness probe); '' = off",
        metavar="PATH",
        c_field="worker.health_path",
    ),
    Setting(
        name="ready_path",
        value_type=str,
        parse=_parse_url_path,
        default="",
        flags=("--ready-path",),
        env=("TAILFAST_READY_PATH",),
        help="GET/HEAD on this path answers 200, or 503 once the server is stopping "
        "(readiness probe); '' = off",
        metavar="PATH",
        c_field="worker.ready_path",
    ),
    Setting(
        name="metrics_path",
        value_type=str,
        parse=_parse_url_path,
        default="",
        flags=("--metrics-path",),
        env=("TAILFAST_METRICS_PATH",),
        help="GET on this path answers the server's metrics in the Prometheus text "
        "format; '' = off",
        metavar="PATH",
        c_field="worker.metrics_path",
    ),
    Setting(
        name="access_log",
        value_type=str,
        parse=_parse_path,
        default="",
        flags=("--access-log",),
        env=("TAILFAST_ACCESS_LOG",),
        help="write one line per request to this file ('-' = standard output; reopened "
        "on SIGUSR1); '' = off",
        metavar="PATH|-",
        c_field="tf_accesslog_open.path",
    ),
    Setting(
        name="access_log_format",
        value_type=str,
        parse=_choice("combined", "common"),
        default="combined",
        flags=("--access-log-format",),
        env=("TAILFAST_ACCESS_LOG_FORMAT",),
        help="access log lines: Apache common or combined format, plus the request "
        "time in seconds",
        metavar="{combined,common}",
        c_field="tf_accesslog_open.format",
    ),
    Setting(
        name="forwarded_allow_ips",
        value_type=str,
        parse=_parse_allow_ips,
        default="127.0.0.1",
        flags=("--forwarded-allow-ips",),
        env=("TAILFAST_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"),
        help="proxies (addresses or CIDRs, comma-separated; '*' = any) whose "
        "X-Forwarded-For, X-Forwarded-Proto and Forwarded headers are trusted",
        metavar="CIDRS",
    ),
    Setting(
        name="reload",
        value_type=bool,
        parse=_parse_bool,
        default="false",
        flags=("--reload",),
        env=("TAILFAST_RELOAD",),
        help="development: watch the application's .py files and the .env files and, when "
        "one changes and the new code imports, replace the workers one at a time (the "
        "application is then imported in the workers only; needs the watchfiles package: "
        "pip install 'tailfast[reload]')",
        metavar="",
        const="true",
    ),
    Setting(
        name="reload_dirs",
        value_type=tuple,
        parse=_parse_list,
        default="",
        flags=("--reload-dir",),
        env=("TAILFAST_RELOAD_DIRS",),
        help="with --reload: a directory to watch instead of the working directory "
        "(repeat the flag, or separate with commas)",
        metavar="DIR",
        multiple=True,
    ),
    Setting(
        name="reload_include",
        value_type=tuple,
        parse=_parse_list,
        default="",
        flags=("--reload-include",),
        env=("TAILFAST_RELOAD_INCLUDE",),
        help="with --reload: also watch files matching this glob, e.g. '*.html' (besides "
        "*.py and the .env files; repeatable or comma-separated)",
        metavar="GLOB",
        multiple=True,
    ),
    Setting(
        name="reload_exclude",
        value_type=tuple,
        parse=_parse_list,
        default="",
        flags=("--reload-exclude",),
        env=("TAILFAST_RELOAD_EXCLUDE",),
        help="with --reload: ignore files matching this glob, e.g. 'tests/*' (a file name, "
        "a path below a watched directory or a directory name; repeatable or comma-separated)",
        metavar="GLOB",
        multiple=True,
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# Settings that a SIGHUP (or a --reload roll) cannot change: they are tied to
# the listening socket, to what the primary did once at start (imported the
# application, wrote the pid file, started the file watcher), or they choose
# the files that are re-read. A new value is logged once as needing a restart.
NEEDS_RESTART: frozenset[str] = frozenset({
    "bind", "fd", "backlog", "balance", "preload", "pid_file", "env_file",
    "reload", "reload_dirs", "reload_include", "reload_exclude",
})


def _config_class() -> type:
    """The resolved settings as a dataclass, one field per row of SETTINGS (typed
    by its value_type), plus what resolving them found out."""
    rows: list[Any] = [(s.name, s.value_type) for s in SETTINGS]
    rows += [
        ("workers_requested", str),  # "auto" or the number as given (workers is resolved)
        ("sources", dict[str, str], field(default_factory=dict)),  # name -> where it came from
        ("file_environ", dict[str, str], field(default_factory=dict)),  # .env values, merged
    ]
    doc = "The resolved settings (one attribute per setting), with where each value came from."
    return make_dataclass("Config", rows, namespace={"__module__": __name__, "__doc__": doc})


# Derived from the table: a setting added there is an attribute here.
Config: Any = _config_class()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one option per setting; absent options stay None."""
    for s in SETTINGS:
        env = " or ".join(s.env)
        default = s.default or "none"
        text = f"{s.help} [env {env}; default {default}]".replace("%", "%%")
        if s.const is not None:
            parser.add_argument(
                *s.flags, dest=s.name, default=None, action="store_const", const=s.const, help=text
            )
        elif s.multiple:
            parser.add_argument(
                *s.flags, dest=s.name, default=None, action="append", metavar=s.metavar, help=text
            )
        else:
            parser.add_argument(
                *s.flags, dest=s.name, default=None, metavar=s.metavar, help=text
            )


# --------------------------------------------------------------------------- CPUs


def _read_cpu_max(path: str | Path) -> int | None:
    """CPUs allowed by a cgroup v2 cpu.max file; None for no limit or no file."""
    try:
        fields = Path(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) < 1 or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def _cgroup_cpu_limit() -> int | None:
    """The tightest cpu.max quota of this process's cgroup v2 and its ancestors."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is None:
        return None
    root = Path("/sys/fs/cgroup")
    directory = root / relative.strip().lstrip("/")
    limits: list[int] = []
    while True:
        limit = _read_cpu_max(directory / "cpu.max")
        if limit is not None:
            limits.append(limit)
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    return min(limits) if limits else None


def available_cpus(cpu_max_path: str | None = None) -> int:
    """CPUs this process may use: the affinity mask, capped by the cgroup CPU quota.

    cpu_max_path reads that cpu.max file instead of the detected cgroup's.
    """
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    limit = _read_cpu_max(cpu_max_path) if cpu_max_path else _cgroup_cpu_limit()
    if limit is not None:
        count = min(count, limit)
    return max(1, count)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Raw:
    value: str
    source: str  # e.g. "flag --workers", "environment variable WORKERS"


@dataclass
class _EnvFile:
    label: str  # how the file is named in messages
    values: dict[str, str]
    lines: dict[str, int]

    def lookup(self, setting: Setting) -> _Raw | None:
        for name in setting.env:
            value = self.values.get(name, "")
            if value.strip():
                return _Raw(value, f"{self.label} line {self.lines[name]}")
        return None


def _read_env_file(
    path: Path, label: str, environ: Mapping[str, str], earlier: Mapping[str, str]
) -> _EnvFile:
    """Reads a .env file with python-dotenv's parser, keeping line numbers.

    ${VAR} references are expanded like python-dotenv does, from the process
    environment first, then from values read so far.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            bindings = list(parse_stream(stream))
    except (OSError, UnicodeDecodeError) as exc:
        reason = os.strerror(exc.errno).lower() if isinstance(exc, OSError) and exc.errno else exc
        raise ConfigError(f"cannot read {label}: {reason}") from None
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for binding in bindings:
        # python-dotenv counts from the blank lines before a binding; skip them.
        original = binding.original.string
        blank = original[: len(original) - len(original.lstrip())]
        line = binding.original.line + len(re.findall(r"\r\n|\n|\r", blank))
        if binding.error:
            text = original.strip()
            raise ConfigError(f"cannot parse {label} line {line}: {text!r} (expected NAME=VALUE)")
        if binding.key is None or binding.value is None:
            continue
        scope = {**earlier, **values, **environ}
        atoms = parse_variables(binding.value)
        values[binding.key] = "".join(atom.resolve(scope) for atom in atoms)
        lines[binding.key] = line
    return _EnvFile(label, values, lines)


def _lookup_environ(setting: Setting, environ: Mapping[str, str]) -> _Raw | None:
    for name in setting.env:
        value = environ.get(name, "")
        if value.strip():
            return _Raw(value, f"environment variable {name}")
    return None


def _lookup_cli(setting: Setting, cli: Mapping[str, str | None]) -> _Raw | None:
    value = cli.get(setting.name)
    if value is None:
        return None
    if isinstance(value, (list, tuple)):  # a repeated flag (action="append")
        value = ",".join(value)
    return _Raw(str(value), f"flag {setting.flag}")


def _parse(setting: Setting, raw: _Raw) -> Any:
    try:
        return setting.parse(raw.value)
    except ValueError as exc:
        raise ConfigError(
            f"invalid {setting.name} {raw.value!r} (from {raw.source}): {exc}"
        ) from None


def load_config(
    cli: Mapping[str, str | None],
    environ: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Config:
    """Resolves every setting: CLI > environment > .env.<mode> > .env > default.

    cli maps setting names to the raw text given on the command line (None = not
    given). Raises ConfigError with one line for any bad value.
    """
    unknown = sorted(set(cli) - set(SETTINGS_BY_NAME))
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r}: expected one of {', '.join(SETTINGS_BY_NAME)}"
        )
    environ = os.environ if environ is None else environ
    directory = Path(os.getcwd() if cwd is None else cwd)
    by_name = SETTINGS_BY_NAME

    # The base file: --env-file / TAILFAST_ENV_FILE, else ./.env (optional).
    env_file_raw = _lookup_cli(by_name["env_file"], cli) or _lookup_environ(
        by_name["env_file"], environ
    )
    base: _EnvFile | None = None
    if env_file_raw is not None:
        env_file = _parse(by_name["env_file"], env_file_raw)
        path = directory / env_file
        if not path.is_file():
            raise ConfigError(
                f"invalid env_file {env_file!r} (from {env_file_raw.source}): "
                f"expected an existing file"
            )
        base = _read_env_file(path, env_file, environ, {})
    elif (directory / ".env").is_file():
        base = _read_env_file(directory / ".env", ".env", environ, {})

    # The mode: --env, else TAILFAST_ENV in the environment, else in the base file.
    mode_setting = by_name["env"]
    mode_raw = (
        _lookup_cli(mode_setting, cli)
        or _lookup_environ(mode_setting, environ)
        or (base.lookup(mode_setting) if base else None)
        or _Raw(mode_setting.default, "default")
    )
    mode: str = _parse(mode_setting, mode_raw)

    mode_path = directory / f".env.{mode}"
    overlay: _EnvFile | None = None
    if mode_path.is_file():
        overlay = _read_env_file(mode_path, f".env.{mode}", environ, base.values if base else {})

    raws: dict[str, _Raw] = {}
    for setting in SETTINGS:
        if setting.name == "env":
            raws["env"] = mode_raw  # .env.<mode> cannot change the mode that selected it
        else:
            raws[setting.name] = (
                _lookup_cli(setting, cli)
                or _lookup_environ(setting, environ)
                or (overlay.lookup(setting) if overlay else None)
                or (base.lookup(setting) if base else None)
                or _Raw(setting.default, "default")
            )

    file_environ: dict[str, str] = {}
    for env_file_values in (base, overlay):
        if env_file_values is not None:
            file_environ.update(env_file_values.values)
    return _resolve(raws, file_environ)


def _resolve(raws: Mapping[str, _Raw], file_environ: dict[str, str]) -> Config:
    """Parses the raw text chosen for every setting into a Config."""
    values = {name: _parse(SETTINGS_BY_NAME[name], raw) for name, raw in raws.items()}
    sources = {name: raw.source for name, raw in raws.items()}
    if values["reload"]:  # the primary never imports the application: a broken save cannot
        values["preload"] = False  # take it down, and each new worker imports the new code
        sources["preload"] = f"{sources['reload']} (imports in the workers)"
    requested: str = values.pop("workers")
    cpu_max_path: str = values["cpu_max_path"]
    workers = available_cpus(cpu_max_path or None) if requested == "auto" else int(requested)
    return Config(
        workers=workers,
        workers_requested=requested,
        sources=sources,
        file_environ=file_environ,
        **values,
    )


def default_config() -> Config:
    """Every setting at its default, without reading flags, the environment or
    .env files (for spawn_workers and tests)."""
    return _resolve({s.name: _Raw(s.default, "default") for s in SETTINGS}, {})


def reread_config(
    running: Config,
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    cwd: str | Path | None = None,
) -> tuple[Config, list[str]]:
    """The configuration as a SIGHUP sees it: cli and environ are those of the
    start (the primary's own environment before .env values were exported to
    it), the .env files are read again, with the same precedence as at start.
    Settings in NEEDS_RESTART keep their running values; returns the Config
    and one line per such setting whose new value is not applied. Raises
    ConfigError like load_config."""
    new = load_config(cli, environ, cwd)
    kept: dict[str, Any] = {}
    notes: list[str] = []
    sources = dict(new.sources)
    for name in sorted(NEEDS_RESTART):
        before, after = getattr(running, name), getattr(new, name)
        if before == after:
            continue
        notes.append(f"{name} {_shown(after)} (from {new.sources[name]}) needs a restart; "
                     f"still {_shown(before)}")
        kept[name] = before
        sources[name] = running.sources.get(name, "default")
    return replace(new, sources=sources, **kept), notes


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return repr(",".join(value))
    return repr(str(value))
