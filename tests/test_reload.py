"""`tailfast run --reload`: a saved change rolls the workers through the readiness-gated
roll; a save that does not import is printed once and the old workers keep serving."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import children, http_request, pid_alive, wait_until

from tailfast.errors import ConfigError

APP = '''
import os

from greeting import WORD


def app(request):
    return f"{{WORD}} {{os.environ.get('GREETING', '-')}} {{os.getpid()}}"
'''

GREETING = 'WORD = "{word}"{padding}\n'


def write_word(directory: Path, word: str) -> None:
    # a different size each time: the import system's cache checks size and mtime
    (directory / "greeting.py").write_text(GREETING.format(word=word, padding=" " * len(word)))


def start(run_server, tmp_path: Path, *args: str, env_text: str = "GREETING=one\n"):
    (tmp_path / "reloadapp.py").write_text(APP.format())
    write_word(tmp_path, "v0")
    (tmp_path / ".env").write_text(env_text)
    server = run_server("reloadapp:app", "--bind", ":0", "--workers", "2", "--reload",
                        "--env", "development", *args, cwd=tmp_path)
    # no scoreboard view of the watcher: its one line says its watches are in place
    server.wait_for(r"reload: watching the working directory")
    return server


def settled(server, generation: int, count: int = 2, timeout: float = 20.0) -> dict:
    return server.wait_state(
        lambda s: s["generation"] == generation and len(s["processes"]) == count
        and all(p["ready"] and p["generation"] == generation for p in s["processes"]),
        f"{count} ready workers of generation {generation}, no other", timeout)


def words(server) -> list[str]:
    status, _, data = http_request(server.port, timeout=10)
    assert status == 200, (status, data)
    return data.decode().split()[:2]


def watcher_pids(server) -> list[int]:
    workers = set(server.live_workers().values())
    return [pid for pid in children(server.proc.pid) if pid not in workers]


def test_an_edited_module_is_served_after_the_roll(run_server, tmp_path):
    server = start(run_server, tmp_path)
    assert words(server) == ["v0", "one"]
    write_word(tmp_path, "v1")
    settled(server, 1)
    assert words(server) == ["v1", "one"]
    server.wait_for(r"reload: greeting\.py changed; checking that the application imports")
    server.wait_for(r"reload: the application imports; rolling the workers")


def test_a_broken_save_keeps_the_old_workers_and_is_printed_once(run_server, tmp_path):
    server = start(run_server, tmp_path)
    before = server.workers_now()
    (tmp_path / "greeting.py").write_text('WORD = "v1"\ndef broken(:\n')
    server.wait_for(r"reload: the new code does not import; the old workers keep serving")
    assert words(server) == ["v0", "one"]
    assert server.workers_now() == before
    assert server.scoreboard()["generation"] == 0  # no roll was started
    output = server.output
    assert output.count("cannot import 'app' from 'reloadapp': SyntaxError") == 1, output
    assert output.count(f'File "{tmp_path / "greeting.py"}", line 2') == 1, output
    assert "def broken(:" in output
    assert "started" not in output.split("does not import")[-1]
    # fixed: the next save rolls
    write_word(tmp_path, "v2")
    settled(server, 1)
    assert words(server) == ["v2", "one"]
    assert server.output.count("cannot import 'app' from 'reloadapp'") == 1


def test_an_exception_at_import_is_printed_with_the_application_traceback(run_server,
                                                                         tmp_path):
    server = start(run_server, tmp_path)
    (tmp_path / "greeting.py").write_text(
        'def load():\n    raise RuntimeError("no word today")\n\nWORD = load()\n')
    server.wait_for(r"reload: the new code does not import")
    output = server.output
    assert "RuntimeError: no word today" in output
    assert f'File "{tmp_path / "greeting.py"}", line 4' in output
    assert "importlib" not in output  # the application's frames only
    assert words(server) == ["v0", "one"]
    (tmp_path / "greeting.py").write_text('import missing_module_xyz\nWORD = "x"\n')
    server.wait_for(r"No module named 'missing_module_xyz'")
    write_word(tmp_path, "v3")
    settled(server, 1)
    assert words(server) == ["v3", "one"]


def test_an_edited_env_file_is_picked_up(run_server, tmp_path):
    server = start(run_server, tmp_path)
    (tmp_path / ".env").write_text("GREETING=two\n")
    settled(server, 1)
    assert words(server) == ["v0", "two"]
    (tmp_path / ".env.development").write_text("GREETING=three\n")
    settled(server, 2)
    assert words(server) == ["v0", "three"]


def test_include_and_exclude_globs(run_server, tmp_path):
    (tmp_path / "scratch").mkdir()
    server = start(run_server, tmp_path, "--reload-exclude", "scratch",
                   "--reload-exclude", "notes_*.py", "--reload-include", "*.txt")
    (tmp_path / "scratch" / "wip.py").write_text("x = 1\n")
    (tmp_path / "notes_today.py").write_text("x = 2\n")
    (tmp_path / "data.txt").write_text("words\n")
    settled(server, 1)
    changed = [line for line in server.lines if "changed; checking" in line]
    assert changed and all("data.txt" in line for line in changed), changed
    assert not any("wip.py" in line or "notes_" in line for line in changed), changed
    assert server.scoreboard()["generation"] == 1


def test_production_mode_warns(run_server, tmp_path):
    (tmp_path / "plainapp.py").write_text("def app(request):\n    return 'ok'\n")
    server = run_server("plainapp:app", "--bind", ":0", "--workers", "1", "--reload",
                        cwd=tmp_path)
    server.wait_for(r"warning: --reload in mode 'production' \(from default\)")


def test_no_watcher_or_checker_is_left_behind(run_server, tmp_path):
    server = start(run_server, tmp_path)
    watchers = watcher_pids(server)
    assert len(watchers) == 1, (watchers, server.output)
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert wait_until(lambda: not any(pid_alive(p) for p in watchers), 5), watchers

    # a primary killed outright takes its watcher with it (PDEATHSIG)
    killed = start(run_server, tmp_path)
    watchers = watcher_pids(killed)
    assert len(watchers) == 1
    os.kill(killed.proc.pid, signal.SIGKILL)
    killed.wait()
    assert wait_until(lambda: not any(pid_alive(p) for p in watchers), 5), watchers


def test_missing_watchfiles_is_a_clear_start_up_error(monkeypatch):
    from tailfast import reload

    monkeypatch.setattr(reload.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'tailfast\[reload\]'"):
        reload.require_watchfiles()


def test_reload_dir_watches_only_that_directory(run_server, tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "dirapp.py").write_text(
        "import os, sys\n"
        "sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'lib'))\n"
        "from greeting import WORD\n\n\n"
        "def app(request):\n    return WORD\n")
    write_word(tmp_path / "lib", "a")
    server = run_server("dirapp:app", "--bind", ":0", "--workers", "1", "--reload",
                        "--reload-dir", "lib", "--env", "development", cwd=tmp_path)
    server.wait_for(r"reload: watching lib for changes")
    (tmp_path / "dirapp.py").write_text((tmp_path / "dirapp.py").read_text() + "# edited\n")
    write_word(tmp_path / "lib", "bb")
    settled(server, 1, count=1)
    status, _, data = http_request(server.port, timeout=10)
    assert (status, data) == (200, b"bb")
    changed = [line for line in server.lines if "changed; checking" in line]
    assert changed and not any("dirapp.py" in line for line in changed), changed
