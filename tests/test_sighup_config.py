"""SIGHUP reads .env and .env.<mode> again: new variables and settings reach the new workers
through the rolling restart, restart-only settings are named once, a bad value keeps the old."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from conftest import Load, http_request

from tailfast.config import load_config, reread_config

APP = '''
import os
import time


def app(request):
    if request.path == "/sleep":
        time.sleep(float(request.query_string or "0"))
    return f"{os.environ.get('GREETING', '-')} {os.getpid()}"
'''


def write_env(directory: Path, text: str) -> None:
    (directory / ".env").write_text(text)


def start(run_server, tmp_path: Path, env_text: str, *args: str):
    (tmp_path / "hupapp.py").write_text(APP)
    write_env(tmp_path, env_text)
    return run_server("hupapp:app", *args, cwd=tmp_path)


def settled(server, generation: int, count: int, timeout: float = 20.0) -> dict:
    """Waits until exactly count processes run, all ready and of generation."""
    return server.wait_state(
        lambda s: s["generation"] == generation and len(s["processes"]) == count
        and all(p["ready"] and p["generation"] == generation and p["state"] != "draining"
                for p in s["processes"]),
        f"{count} ready workers of generation {generation}, no other", timeout)


def body(server, path: str = "/") -> str:
    status, _, data = http_request(server.port, path=path, timeout=10)
    assert status == 200, (status, data)
    return data.decode().split()[0]


def test_an_edited_env_value_reaches_the_new_workers_with_no_failed_request(
        run_server, tmp_path):
    server = start(run_server, tmp_path, "GREETING=one\n", "--bind", ":0", "--workers", "2")
    assert body(server) == "one"
    load = Load(server.port)
    try:
        load.wait_answered(20)
        write_env(tmp_path, "GREETING=two\n")
        server.signal(signal.SIGHUP)
        settled(server, 1, 2)
        answered = load.ok
        load.wait_answered(answered + 20)  # the load goes on after the roll
    finally:
        load.stop()
    assert not load.failures, load.failures[:5]
    assert load.versions[-1] == "two" and "one" in load.versions
    assert all(body(server) == "two" for _ in range(10))


def test_the_process_environment_still_wins_over_an_edited_file(run_server, tmp_path):
    (tmp_path / "hupapp.py").write_text(APP)
    write_env(tmp_path, "GREETING=file\n")
    server = run_server("hupapp:app", "--bind", ":0", "--workers", "1", cwd=tmp_path,
                        env={"GREETING": "process"})
    write_env(tmp_path, "GREETING=edited\n")
    server.signal(signal.SIGHUP)
    settled(server, 1, 1)
    assert body(server) == "process"


def test_the_worker_count_follows_the_file_up_and_down(run_server, tmp_path):
    server = start(run_server, tmp_path, "WORKERS=2\n", "--bind", ":0")
    assert server.workers == 2
    write_env(tmp_path, "TAILFAST_WORKERS=3\n")
    server.signal(signal.SIGHUP)
    snapshot = settled(server, 1, 3)
    assert snapshot["workers"] == 3
    assert sorted(p["worker_id"] for p in snapshot["processes"]) == [1, 2, 3]
    server.wait_for(r"SIGHUP: rolling restart, 3 workers \(were 2; generation 1\)")
    write_env(tmp_path, "WORKERS=2\n")
    server.signal(signal.SIGHUP)
    snapshot = settled(server, 2, 2)
    assert snapshot["workers"] == 2
    assert sorted(p["worker_id"] for p in snapshot["processes"]) == [1, 2]


def test_a_flag_keeps_precedence_over_the_edited_file(run_server, tmp_path):
    server = start(run_server, tmp_path, "GREETING=a\n", "--bind", ":0", "--workers", "1")
    write_env(tmp_path, "GREETING=b\nWORKERS=3\n")
    server.signal(signal.SIGHUP)
    settled(server, 1, 1)
    assert body(server) == "b"


def test_a_changed_timeout_takes_effect_in_the_new_workers(run_server, tmp_path):
    server = start(run_server, tmp_path, "TAILFAST_TIMEOUT=30\n", "--bind", ":0",
                   "--workers", "1")
    assert body(server, "/sleep?0.8") == "-"  # within 30 s
    write_env(tmp_path, "TAILFAST_TIMEOUT=0.3\n")
    server.signal(signal.SIGHUP)
    settled(server, 1, 1)
    began = time.monotonic()
    status, _, _ = http_request(server.port, path="/sleep?5", timeout=10)
    assert status == 503
    assert time.monotonic() - began < 4


def test_a_changed_log_level_applies_to_the_primary_and_new_workers(run_server, tmp_path):
    server = start(run_server, tmp_path, "", "--bind", ":0", "--workers", "1")
    write_env(tmp_path, "TAILFAST_LOG_LEVEL=warning\n")
    server.signal(signal.SIGHUP)
    settled(server, 1, 1)
    lines = len(server.lines)
    server.signal(signal.SIGTTIN)  # an info line ("SIGTTIN: now 2 workers") before
    server.wait_ready(2)
    assert not any("SIGTTIN" in line or "started" in line for line in server.lines[lines:])


def test_a_changed_bind_is_logged_once_as_needing_a_restart(run_server, tmp_path):
    server = start(run_server, tmp_path, "TAILFAST_BIND=127.0.0.1:0\nGREETING=x\n",
                   "--workers", "1")
    port = server.port
    write_env(tmp_path, "TAILFAST_BIND=127.0.0.1:1\nGREETING=y\nTAILFAST_BACKLOG=16\n")
    server.signal(signal.SIGHUP)
    settled(server, 1, 1)
    server.signal(signal.SIGHUP)  # the same file again: not said twice
    settled(server, 2, 1)
    bind = [line for line in server.lines if "needs a restart" in line and "bind" in line]
    assert bind == ["tailfast: SIGHUP: bind '127.0.0.1:1' (from .env line 1) needs a restart; "
                    "still '127.0.0.1:0'"], server.output
    assert server.output.count("backlog '16' (from .env line 3) needs a restart") == 1
    assert body(server) == "y"  # the other values were applied, on the same socket
    assert server.port == port


def test_a_bad_value_is_reported_and_the_old_configuration_keeps_serving(run_server, tmp_path):
    server = start(run_server, tmp_path, "GREETING=good\nTAILFAST_WORKERS=2\n", "--bind", ":0")
    before = server.workers_now()
    write_env(tmp_path, "GREETING=bad\nTAILFAST_WORKERS=many\n")
    server.signal(signal.SIGHUP)
    server.wait_for(r"SIGHUP: invalid workers 'many' \(from \.env line 2\): expected a "
                    r"positive integer or 'auto'; the current configuration keeps serving "
                    r"\(no roll\)")
    snapshot = server.scoreboard()
    assert snapshot is not None and snapshot["generation"] == 0
    assert server.workers_now() == before
    assert body(server) == "good"
    write_env(tmp_path, "GREETING=fixed\nTAILFAST_WORKERS=2\n")
    server.signal(signal.SIGHUP)
    settled(server, 1, 2)
    assert body(server) == "fixed"


def test_reread_config_precedence_and_restart_only_settings(tmp_path):
    """The re-read without a server: flags > start environment > .env.<mode> > .env."""
    write_env(tmp_path, "GREETING=one\nTAILFAST_TIMEOUT=5\nTAILFAST_BALANCE=shared\n")
    cli = {"workers": "2"}
    environ = {"TAILFAST_KEEPALIVE_TIMEOUT": "7"}
    running = load_config(cli, environ, tmp_path)
    write_env(tmp_path, "GREETING=two\nTAILFAST_TIMEOUT=9\nTAILFAST_BALANCE=reuseport\n"
                        "WORKERS=5\nTAILFAST_KEEPALIVE_TIMEOUT=1\n")
    (tmp_path / ".env.production").write_text("TAILFAST_TIMEOUT=11\n")
    new, notes = reread_config(running, cli, environ, tmp_path)
    assert new.file_environ["GREETING"] == "two"
    assert new.timeout == 11.0  # .env.<mode> over .env
    assert new.keepalive_timeout == 7.0  # the start environment over the files
    assert new.workers == 2  # the flag over everything
    assert new.balance == "shared"  # tied to the socket: kept
    assert new.sources["balance"] == running.sources["balance"]
    assert notes == ["balance 'reuseport' (from .env line 3) needs a restart; still 'shared'"]
