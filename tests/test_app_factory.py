"""Application factories: MODULE:factory(literal arguments) and --factory, never evaluated."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import http_request, server_env

from tailfast.app import parse_app_spec
from tailfast.errors import AppImportError

FACTORY_APP = '''
import json
import os

MARKS = os.environ["MARKS"]

def create_app(mode="development", *, workers=None, debug=False):
    open(os.path.join(MARKS, f"factory-{os.getpid()}"), "w").close()
    settings = {"mode": mode, "workers": workers, "debug": debug, "pid": os.getpid()}

    def app(request):
        return json.dumps(settings)
    return app

def failing_factory():
    raise RuntimeError("no database configured")

def not_an_app():
    return 42

class Holder:
    @staticmethod
    def make():
        return create_app("nested")
'''


def write_app(tmp_path: Path) -> Path:
    (tmp_path / "factoryapp.py").write_text(FACTORY_APP)
    marks = tmp_path / "marks"
    marks.mkdir()
    return marks


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tailfast run ...` expected to stop by itself (a start-up error)."""
    env = server_env({"MARKS": str(tmp_path / "marks")})
    return subprocess.run([sys.executable, "-m", "tailfast", "run", *args, "--bind", ":0"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)


def factory_runs(marks: Path) -> set[int]:
    return {int(name.split("-")[1]) for name in os.listdir(marks)}


def served_settings(port: int) -> dict[str, object]:
    import json

    status, _, body = http_request(port)
    assert status == 200
    return json.loads(body)


# ----------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, attr, args, kwargs", [
    ("m:create_app()", "create_app", (), {}),
    ('m:create_app("production")', "create_app", ("production",), {}),
    ("m:create_app('x', 3, -1.5, True, False, None)", "create_app",
     ("x", 3, -1.5, True, False, None), {}),
    ("m:create_app(mode='prod', workers=4)", "create_app", (), {"mode": "prod", "workers": 4}),
    ("m:Holder.make()", "Holder.make", (), {}),
])
def test_factory_calls_are_parsed_into_literals(text, attr, args, kwargs):
    spec = parse_app_spec(text)
    assert (spec.module, spec.attr, spec.factory, spec.args, spec.kwargs) == (
        "m", attr, True, args, kwargs)


def test_plain_specs_are_not_factories_unless_asked():
    assert parse_app_spec("pkg.mod:app").factory is False
    assert parse_app_spec("pkg.mod").attr == "app"
    asked = parse_app_spec("pkg.mod:create_app", factory=True)
    assert (asked.attr, asked.factory, asked.args) == ("create_app", True, ())


@pytest.mark.parametrize("text, says", [
    ("m:create_app(__import__('os').system('true'))", "must be literals"),
    ("m:create_app(name)", "must be literals"),
    ("m:create_app(1 + 2)", "must be literals"),
    ("m:create_app(*args)", "no * or **"),
    ("m:create_app(**options)", "no * or **"),
    ("m:create_app(", "expected MODULE:CALLABLE"),
    ("m:create_app()()", "expected MODULE:CALLABLE"),
    ("m:app[0]", "expected MODULE:CALLABLE"),
    (":app", "expected MODULE:CALLABLE"),
])
def test_anything_but_literals_is_rejected(text, says):
    with pytest.raises(AppImportError, match=re.escape(says)):
        parse_app_spec(text)


# ----------------------------------------------------------------- served


def test_factory_runs_once_in_the_primary_with_preload(run_server, tmp_path):
    marks = write_app(tmp_path)
    server = run_server("factoryapp:create_app()", "--bind", ":0", "--workers", "2",
                        cwd=tmp_path, env={"MARKS": str(marks)})
    settings = served_settings(server.port)
    assert settings["mode"] == "development"
    assert factory_runs(marks) == {server.proc.pid}


def test_literal_arguments_reach_the_factory(run_server, tmp_path):
    marks = write_app(tmp_path)
    server = run_server('factoryapp:create_app("production", workers=2, debug=True)',
                        "--bind", ":0", "--workers", "1", cwd=tmp_path,
                        env={"MARKS": str(marks)})
    settings = served_settings(server.port)
    assert (settings["mode"], settings["workers"], settings["debug"]) == ("production", 2, True)


def test_factory_flag_calls_the_named_callable(run_server, tmp_path):
    marks = write_app(tmp_path)
    server = run_server("factoryapp:create_app", "--factory", "--bind", ":0", "--workers", "1",
                        cwd=tmp_path, env={"MARKS": str(marks)})
    assert served_settings(server.port)["mode"] == "development"


def test_factory_runs_in_each_worker_without_preload(run_server, tmp_path):
    marks = write_app(tmp_path)
    server = run_server("factoryapp:Holder.make()", "--no-preload", "--bind", ":0",
                        "--workers", "2", cwd=tmp_path, env={"MARKS": str(marks)})
    workers = set(server.live_workers().values())
    settings = served_settings(server.port)
    assert settings["mode"] == "nested" and settings["pid"] in workers
    assert factory_runs(marks) == workers  # never in the primary


def test_code_in_the_arguments_is_never_run(tmp_path):
    write_app(tmp_path)
    canary = tmp_path / "ran"
    result = run_cli(tmp_path, f"factoryapp:create_app(open({str(canary)!r}, 'w'))")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "factory arguments must be literals" in lines[0], result.stderr
    assert not canary.exists()


def test_a_failing_factory_is_reported_like_an_import_error(tmp_path):
    marks = write_app(tmp_path)
    result = run_cli(tmp_path, "factoryapp:failing_factory()")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0] == (
        "tailfast: cannot create the application with factoryapp:failing_factory(): "
        "RuntimeError: no database configured")
    assert "started" not in result.stderr and not os.listdir(marks)
    # then where it failed, in the application's frames only
    trace = result.stderr.split("\n", 1)[1]
    assert f'File "{tmp_path / "factoryapp.py"}", line 16, in failing_factory' in trace
    assert "tailfast/" not in trace and trace.splitlines()[-1].startswith("RuntimeError")


def test_a_failing_factory_without_preload_stops_the_start(tmp_path):
    write_app(tmp_path)
    result = run_cli(tmp_path, "factoryapp:failing_factory()", "--no-preload", "--workers", "2")
    assert result.returncode == 1, result.stderr
    assert ("cannot create the application with factoryapp:failing_factory(): "
            "RuntimeError: no database configured") in result.stderr
    assert f'File "{tmp_path / "factoryapp.py"}", line 16, in failing_factory' in result.stderr
    assert "cannot start; stopping" in result.stderr


def test_a_factory_must_return_an_application(tmp_path):
    write_app(tmp_path)
    result = run_cli(tmp_path, "factoryapp:not_an_app()")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "tailfast: factoryapp:not_an_app() returned a int, not a callable application")


def test_sighup_runs_the_factory_again_in_the_new_workers(run_server, tmp_path):
    marks = write_app(tmp_path)
    server = run_server('factoryapp:create_app("one")', "--bind", ":0", "--workers", "1",
                        cwd=tmp_path, env={"MARKS": str(marks)})
    old = server.live_workers()[1]
    assert served_settings(server.port)["mode"] == "one"
    server.signal(signal.SIGHUP)
    new = server.wait_replaced(1, old)
    assert factory_runs(marks) == {server.proc.pid, new}
    settings = served_settings(server.port)
    assert (settings["mode"], settings["pid"]) == ("one", new)
