"""Unit tests for tailfast.config and tailfast.listen: no server processes."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest

from tailfast import config as config_module
from tailfast.config import (
    SETTINGS,
    BindAddress,
    Config,
    add_arguments,
    available_cpus,
    load_config,
    parse_bind,
)
from tailfast.errors import ConfigError, TailfastError
from tailfast.listen import create_listener, listener_url, remove_unix_socket

AFFINITY = len(os.sched_getaffinity(0))


def load(
    tmp_path: Path,
    cli: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    return load_config(cli or {}, environ=environ or {}, cwd=tmp_path)


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------- the table


def test_table_and_config_agree() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    fields = {f.name for f in dataclasses.fields(Config)}
    assert set(names) <= fields
    assert fields - set(names) == {"workers_requested", "sources", "file_environ"}


def test_add_arguments_leaves_absent_flags_none_and_documents_env() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["-w", "3", "--bind", ":0"])
    assert args.workers == "3"
    assert args.bind == ":0"
    assert args.backlog is None and args.env is None
    text = parser.format_help()
    assert "TAILFAST_WORKERS or WORKERS" in text
    assert "--limit-request-body" in text and "16m" in text


# ------------------------------------------------------------------- sources


def test_defaults(tmp_path: Path) -> None:
    c = load(tmp_path)
    assert c.bind == BindAddress(socket.AF_INET, "127.0.0.1", 8000)
    assert c.workers_requested == "auto"
    assert c.workers >= 1
    assert c.backlog == 2048
    assert c.graceful_timeout == 30.0
    assert c.keepalive_timeout == 5.0
    assert c.header_timeout == 10.0
    assert c.body_timeout == 30.0
    assert c.request_timeout == 60.0
    assert c.limit_request_body == 16 * 1024 * 1024
    assert c.limit_request_line == 8190
    assert c.limit_request_fields == 100
    assert c.limit_request_field_size == 8190
    assert c.max_connections == 10000
    assert c.interface == "auto"
    assert c.env == "production"
    assert c.env_file == ""
    assert c.log_level == "info"
    assert set(c.sources.values()) == {"default"}
    assert c.file_environ == {}


def test_each_source(tmp_path: Path) -> None:
    write(tmp_path / ".env", "TAILFAST_BACKLOG=100\n")
    write(tmp_path / ".env.production", "\n\nTAILFAST_MAX_CONNECTIONS=7\n")
    c = load(
        tmp_path,
        cli={"workers": "3", "bind": None},
        environ={"TAILFAST_KEEPALIVE_TIMEOUT": "2.5"},
    )
    assert c.workers == 3 and c.sources["workers"] == "flag --workers"
    assert c.keepalive_timeout == 2.5
    assert c.sources["keepalive_timeout"] == "environment variable TAILFAST_KEEPALIVE_TIMEOUT"
    assert c.max_connections == 7 and c.sources["max_connections"] == ".env.production line 3"
    assert c.backlog == 100 and c.sources["backlog"] == ".env line 1"
    assert c.sources["bind"] == "default"


def test_full_precedence_chain(tmp_path: Path) -> None:
    write(tmp_path / ".env", "TAILFAST_BACKLOG=1\n")
    write(tmp_path / ".env.production", "TAILFAST_BACKLOG=2\n")
    environ = {"TAILFAST_BACKLOG": "3"}
    cli = {"backlog": "4"}
    assert load(tmp_path, cli, environ).backlog == 4
    assert load(tmp_path, {}, environ).backlog == 3
    assert load(tmp_path).backlog == 2
    (tmp_path / ".env.production").unlink()
    assert load(tmp_path).backlog == 1
    (tmp_path / ".env").unlink()
    assert load(tmp_path).backlog == 2048


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    c = load(tmp_path, environ={"TAILFAST_BACKLOG": "", "WORKERS": " "})
    assert c.backlog == 2048 and c.workers_requested == "auto"


# ------------------------------------------------------------------- mode


def test_mode_from_flag_environment_file_default(tmp_path: Path) -> None:
    write(tmp_path / ".env", "TAILFAST_ENV=staging\n")
    for mode in ("staging", "test", "dev", "production"):
        write(tmp_path / f".env.{mode}", f"WHICH={mode}\n")
    c = load(tmp_path, {"env": "test"}, {"TAILFAST_ENV": "dev"})
    assert (c.env, c.sources["env"], c.file_environ["WHICH"]) == ("test", "flag --env", "test")
    c = load(tmp_path, {}, {"TAILFAST_ENV": "dev"})
    assert (c.env, c.sources["env"]) == ("dev", "environment variable TAILFAST_ENV")
    assert c.file_environ["WHICH"] == "dev"
    c = load(tmp_path)
    assert (c.env, c.sources["env"]) == ("staging", ".env line 1")
    assert c.file_environ["WHICH"] == "staging"
    (tmp_path / ".env").unlink()
    c = load(tmp_path)
    assert (c.env, c.sources["env"]) == ("production", "default")
    assert c.file_environ["WHICH"] == "production"


def test_mode_file_cannot_change_the_mode(tmp_path: Path) -> None:
    write(tmp_path / ".env.production", "TAILFAST_ENV=other\n")
    assert load(tmp_path).env == "production"


def test_bad_mode_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^invalid env '\.\./x' \(from flag --env\): expected"):
        load(tmp_path, {"env": "../x"})


def test_env_file_replaces_dot_env(tmp_path: Path) -> None:
    write(tmp_path / ".env", "TAILFAST_BACKLOG=1\nA=dot\n")
    write(tmp_path / "other.env", "TAILFAST_BACKLOG=5\nB=other\n")
    write(tmp_path / ".env.production", "C=mode\n")
    c = load(tmp_path, {"env_file": "other.env"})
    assert c.backlog == 5 and c.sources["backlog"] == "other.env line 1"
    assert c.file_environ == {"TAILFAST_BACKLOG": "5", "B": "other", "C": "mode"}
    c = load(tmp_path, {}, {"TAILFAST_ENV_FILE": str(tmp_path / "other.env")})
    assert c.backlog == 5


def test_missing_explicit_env_file(tmp_path: Path) -> None:
    message = r"^invalid env_file 'nope\.env' \(from flag --env-file\): expected an existing file"
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, {"env_file": "nope.env"})
    with pytest.raises(ConfigError, match=r"\(from environment variable TAILFAST_ENV_FILE\)"):
        load(tmp_path, {}, {"TAILFAST_ENV_FILE": "nope.env"})


# ------------------------------------------------------------------- workers


def test_tailfast_workers_beats_workers(tmp_path: Path) -> None:
    c = load(tmp_path, environ={"WORKERS": "2", "TAILFAST_WORKERS": "5"})
    assert c.workers == 5 and c.sources["workers"] == "environment variable TAILFAST_WORKERS"
    c = load(tmp_path, environ={"WORKERS": "2"})
    assert c.workers == 2 and c.sources["workers"] == "environment variable WORKERS"
    write(tmp_path / ".env", "WORKERS=3\nTAILFAST_WORKERS=4\n")
    c = load(tmp_path)
    assert c.workers == 4 and c.sources["workers"] == ".env line 2"


def test_auto_workers_with_cpu_max(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    write(cpu_max, "150000 100000\n")
    assert available_cpus(str(cpu_max)) == min(AFFINITY, 2)
    c = load(tmp_path, {"workers": "auto", "cpu_max_path": str(cpu_max)})
    assert c.workers == min(AFFINITY, 2) and c.workers_requested == "auto"
    write(cpu_max, "max 100000\n")
    assert available_cpus(str(cpu_max)) == AFFINITY
    c = load(tmp_path, environ={"TAILFAST_CPU_MAX_PATH": str(cpu_max)})
    assert c.workers == AFFINITY
    write(cpu_max, "50000 100000\n")
    assert available_cpus(str(cpu_max)) == 1
    assert available_cpus(str(tmp_path / "missing")) == AFFINITY


def test_cgroup_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert 1 <= available_cpus() <= AFFINITY
    monkeypatch.setattr(config_module, "_cgroup_cpu_limit", lambda: 1)
    assert available_cpus() == 1


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("workers", "abc", "expected a positive integer or 'auto'"),
        ("workers", "0", "expected a positive integer or 'auto'"),
        ("workers", "1025", "expected a positive integer up to 1024 or 'auto'"),
        ("bind", "nowhere", "expected HOST:PORT, [IPv6]:PORT, :PORT or unix:PATH"),
        ("bind", "127.0.0.1", "expected HOST:PORT, [IPv6]:PORT, :PORT or unix:PATH"),
        ("bind", "nowhere:80", "expected HOST:PORT, [IPv6]:PORT, :PORT or unix:PATH"),
        ("bind", ":65536", "expected a port from 0 to 65535"),
        ("backlog", "0", "expected an integer from 1 to 65535"),
        ("backlog", "65536", "expected an integer from 1 to 65535"),
        ("graceful_timeout", "-1", "expected seconds >= 0"),
        ("keepalive_timeout", "soon", "expected seconds >= 0"),
        ("request_timeout", "0", "expected seconds > 0"),
        ("request_timeout", "nan", "expected seconds > 0"),
        ("header_timeout", "0", "expected seconds > 0"),
        ("body_timeout", "-1", "expected seconds > 0"),
        ("limit_request_line", "15", "expected an integer from 16 to 1048576"),
        ("limit_request_fields", "0", "expected an integer from 1 to 100"),
        ("limit_request_fields", "101", "expected an integer from 1 to 100"),
        ("limit_request_field_size", "2m", "expected an integer from 16 to 1048576"),
        ("limit_request_body", "-5", "expected a number of bytes >= 0"),
        ("limit_request_body", "3t", "expected a number of bytes >= 0"),
        ("max_connections", "1000001", "expected an integer from 1 to 1000000"),
        ("interface", "rsgi", "expected one of auto, native, wsgi, asgi"),
        ("log_level", "loud", "expected one of debug, info, warning, error"),
    ],
)
def test_error_from_flag(tmp_path: Path, name: str, value: str, expected: str) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {name: value})
    message = str(info.value)
    assert message.startswith(f"invalid {name} {value!r} (from flag {flag}): {expected}")
    assert "\n" not in message


def test_error_messages_exact(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, environ={"WORKERS": "abc"})
    assert str(info.value) == (
        "invalid workers 'abc' (from environment variable WORKERS): "
        "expected a positive integer or 'auto'"
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path, {"bind": "nowhere"})
    assert str(info.value) == (
        "invalid bind 'nowhere' (from flag --bind): "
        "expected HOST:PORT, [IPv6]:PORT, :PORT or unix:PATH"
    )
    assert isinstance(info.value, TailfastError)


def test_error_from_files_names_the_line(tmp_path: Path) -> None:
    write(tmp_path / ".env", "# comment\nTAILFAST_BACKLOG=lots\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value) == (
        "invalid backlog 'lots' (from .env line 2): expected an integer from 1 to 65535"
    )
    write(tmp_path / ".env", "")
    write(tmp_path / ".env.production", "A=1\nB=2\nWORKERS=many\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value) == (
        "invalid workers 'many' (from .env.production line 3): "
        "expected a positive integer or 'auto'"
    )


def test_line_numbers_skip_blank_lines_and_multiline_values(tmp_path: Path) -> None:
    write(tmp_path / ".env", '\n\n  A=1\n# c\n\r\nB="x\ny"\n\nTAILFAST_BACKLOG=no\n')
    with pytest.raises(ConfigError, match=r"\(from \.env line 9\)"):
        load(tmp_path)


def test_unparseable_file_line(tmp_path: Path) -> None:
    write(tmp_path / ".env", "A=1\n\nthis is not a binding\n")
    with pytest.raises(ConfigError, match=r"^cannot parse \.env line 3: "):
        load(tmp_path)


def test_unknown_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'wrokers'"):
        load(tmp_path, {"wrokers": "2"})


# ------------------------------------------------------------------- values


def test_limit_request_body_suffixes(tmp_path: Path) -> None:
    for text, expected in [("0", 0), ("100", 100), ("4k", 4096), ("2M", 2 << 20), ("1g", 1 << 30)]:
        assert load(tmp_path, {"limit_request_body": text}).limit_request_body == expected


@pytest.mark.parametrize(
    ("text", "expected", "url"),
    [
        ("127.0.0.1:8000", BindAddress(socket.AF_INET, "127.0.0.1", 8000), "http://127.0.0.1:8000"),
        ("0.0.0.0:80", BindAddress(socket.AF_INET, "0.0.0.0", 80), "http://0.0.0.0:80"),
        (":9000", BindAddress(socket.AF_INET, "127.0.0.1", 9000), "http://127.0.0.1:9000"),
        (":0", BindAddress(socket.AF_INET, "127.0.0.1", 0), "http://127.0.0.1:0"),
        ("localhost:8080", BindAddress(socket.AF_INET, "127.0.0.1", 8080), "http://127.0.0.1:8080"),
        ("[::1]:8000", BindAddress(socket.AF_INET6, "::1", 8000), "http://[::1]:8000"),
        ("[::]:65535", BindAddress(socket.AF_INET6, "::", 65535), "http://[::]:65535"),
        ("unix:/tmp/x.sock", BindAddress(socket.AF_UNIX, path="/tmp/x.sock"), "unix:/tmp/x.sock"),
    ],
)
def test_parse_bind(text: str, expected: BindAddress, url: str) -> None:
    assert parse_bind(text) == expected
    assert parse_bind(text).url == url


@pytest.mark.parametrize(
    "text", ["", "8000", "host", "nowhere:80", "::1:8000", "[::1]", "[nowhere]:80", ":x", "unix:"]
)
def test_parse_bind_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bind(text)


# ------------------------------------------------------------------- file_environ


def test_file_environ(tmp_path: Path) -> None:
    write(
        tmp_path / ".env",
        "DATABASE_URL=postgres://db/app\nSHARED=base\nexport QUOTED='a b'\nNOVALUE\n",
    )
    write(tmp_path / ".env.staging", "SHARED=staging\nDERIVED=${DATABASE_URL}?x=1\n")
    c = load(tmp_path, {"env": "staging"})
    assert c.file_environ == {
        "DATABASE_URL": "postgres://db/app",
        "SHARED": "staging",
        "QUOTED": "a b",
        "DERIVED": "postgres://db/app?x=1",
    }


def test_load_config_defaults_to_process_environment_and_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAILFAST_BACKLOG", "77")
    write(tmp_path / ".env", "TAILFAST_MAX_CONNECTIONS=9\n")
    c = load_config({})
    assert c.backlog == 77 and c.max_connections == 9


# ------------------------------------------------------------------- listener


def listen_config(tmp_path: Path, bind: str) -> Config:
    return load(tmp_path, {"bind": bind, "workers": "1"})


def test_listener_ephemeral_port(tmp_path: Path) -> None:
    c = listen_config(tmp_path, ":0")
    sock = create_listener(c)
    try:
        assert not sock.getblocking()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        port = sock.getsockname()[1]
        assert port != 0
        assert listener_url(sock, c) == f"http://127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        sock.close()


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_listener_ipv6(tmp_path: Path) -> None:
    c = listen_config(tmp_path, "[::1]:0")
    sock = create_listener(c)
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        port = sock.getsockname()[1]
        assert listener_url(sock, c) == f"http://[::1]:{port}"
    finally:
        sock.close()


def test_listener_unix(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    c = listen_config(tmp_path, f"unix:{path}")
    sock = create_listener(c)
    try:
        assert listener_url(sock, c) == f"unix:{path}"
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
        # A live socket is not taken over.
        with pytest.raises(ConfigError, match="address already in use"):
            create_listener(c)
    finally:
        sock.close()
    # Closed but the file remains: stale, so it is replaced.
    assert path.exists()
    sock = create_listener(c)
    sock.close()
    remove_unix_socket(c)
    assert not path.exists()


def test_listener_unix_refuses_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    write(path, "data")
    with pytest.raises(ConfigError, match="file exists and is not a socket"):
        create_listener(listen_config(tmp_path, f"unix:{path}"))
    assert path.read_text() == "data"


def test_port_in_use_is_a_clear_config_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        c = listen_config(tmp_path, f"127.0.0.1:{port}")
        with pytest.raises(ConfigError) as info:
            create_listener(c)
    assert str(info.value) == (
        f"cannot listen on 127.0.0.1:{port} (bind from flag --bind): "
        f"{os.strerror(errno.EADDRINUSE).lower()}"
    )


DURATIONS = [s.name for s in config_module.SETTINGS if s.value_type is float]


@pytest.mark.parametrize("name", DURATIONS)
def test_every_duration_is_at_most_one_day(tmp_path: Path, name: str) -> None:
    """Past about 24.8 days a duration overflowed poll's int milliseconds (every
    stalled write then failed after 1 ms): each is bounded where it is parsed."""
    assert "request_timeout" in DURATIONS and "graceful_timeout" in DURATIONS
    assert getattr(load(tmp_path, {name: "86400"}), name) == 86400.0
    for value in ("86400.5", "2147484", "3e6", "1e300"):
        with pytest.raises(ConfigError) as info:
            load(tmp_path, {name: value})
        assert "at most 86400 (one day)" in str(info.value)
