"""Configuration as a user meets it: flags, variables, .env files, bad values, bad apps."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, http_request, server_env


def run_cli(*args: str, env: dict[str, str] | None = None, cwd=None,
            timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Runs `tailfast ...` expecting it to exit by itself (start-up errors)."""
    full_env = server_env(env)
    return subprocess.run([sys.executable, "-m", "tailfast", *args], capture_output=True,
                          text=True, env=full_env, cwd=str(cwd or ROOT), timeout=timeout)


def single_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "started" not in result.stderr  # no worker was forked
    return lines[0]


def test_help_lists_every_setting():
    from tailfast.config import SETTINGS

    result = run_cli("run", "--help")
    assert result.returncode == 0
    for setting in SETTINGS:
        assert setting.flag in result.stdout, setting.name


@pytest.mark.parametrize("env_name", ["WORKERS", "TAILFAST_WORKERS"])
def test_worker_count_from_environment(run_server, env_name):
    server = run_server("testapp:app", "--bind", ":0", env={env_name: "3"})
    assert server.workers == 3
    assert len(server.live_workers()) == 3


def test_flag_beats_environment(run_server):
    server = run_server("testapp:app", "--bind", ":0", "--workers", "1",
                        env={"WORKERS": "3", "TAILFAST_WORKERS": "2"})
    assert server.workers == 1


def test_dotenv_files_and_precedence(run_server, tmp_path):
    (tmp_path / ".env").write_text("TAILFAST_WORKERS=3\nAPP_SETTING=from-dotenv\n")
    (tmp_path / ".env.development").write_text("TAILFAST_WORKERS=2\n")
    # .env alone
    server = run_server("testapp:app", "--bind", ":0", cwd=tmp_path)
    assert server.workers == 3
    assert http_request(server.port, path="/env")[2] == b"from-dotenv"
    server.stop()
    # .env.<mode> over .env
    server = run_server("testapp:app", "--bind", ":0", "--env", "development", cwd=tmp_path)
    assert server.workers == 2
    server.stop()
    # the process environment over both
    server = run_server("testapp:app", "--bind", ":0", cwd=tmp_path,
                        env={"TAILFAST_ENV": "development", "TAILFAST_WORKERS": "1",
                             "APP_SETTING": "from-env"})
    assert server.workers == 1
    assert http_request(server.port, path="/env")[2] == b"from-env"


def test_auto_workers_follow_the_affinity_mask(run_server):
    if shutil.which("taskset") is None:
        pytest.skip("taskset is not installed")
    server = run_server("testapp:app", "--bind", ":0", prefix=["taskset", "-c", "0"])
    assert server.workers == 1
    assert len(server.live_workers()) == 1


def test_auto_workers_follow_the_cgroup_quota(run_server, tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")
    server = run_server("testapp:app", "--bind", ":0", "--cpu-max-path", str(cpu_max))
    assert server.workers == 1


def test_bad_worker_count_from_environment():
    line = single_line_error(run_cli("run", "testapp:app", env={"WORKERS": "abc"}))
    assert line.startswith("tailfast: ")
    assert "'abc'" in line and "WORKERS" in line and "auto" in line


def test_bad_value_in_dotenv_names_file_and_line(tmp_path):
    (tmp_path / ".env").write_text("# comment\nTAILFAST_BACKLOG=lots\n")
    line = single_line_error(run_cli("run", "testapp:app", "--bind", ":0", cwd=tmp_path))
    assert ".env line 2" in line and "'lots'" in line


def test_bad_bind():
    line = single_line_error(run_cli("run", "testapp:app", "--bind", "nowhere"))
    assert "'nowhere'" in line and "--bind" in line and "HOST:PORT" in line


def test_port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = single_line_error(run_cli("run", "testapp:app", "--bind", f"127.0.0.1:{port}"))
    assert f"127.0.0.1:{port}" in line and "in use" in line


def test_missing_module():
    line = single_line_error(run_cli("run", "myapp:app", "--bind", ":0"))
    assert line == "tailfast: cannot import 'app' from 'myapp': No module named 'myapp'"


def test_missing_attribute():
    line = single_line_error(run_cli("run", "testapp:nothing", "--bind", ":0"))
    assert line == ("tailfast: cannot import 'nothing' from 'testapp': "
                    "module 'testapp' has no attribute 'nothing'")


def test_not_callable():
    line = single_line_error(run_cli("run", "testapp:value", "--bind", ":0"))
    assert "not callable" in line


def test_async_callable_of_two_arguments_is_rejected(tmp_path):
    (tmp_path / "asyncapp.py").write_text("async def app(a, b):\n    return b'x'\n")
    line = single_line_error(run_cli("run", "asyncapp:app", "--bind", ":0", cwd=tmp_path))
    assert "cannot tell how to call app(a, b)" in line and "--interface" in line


def app_error(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The one-line message and the application's traceback printed after it."""
    assert result.returncode == 2, result.stderr
    assert "started" not in result.stderr  # no worker was forked
    first, _, rest = result.stderr.partition("\n")
    assert "tailfast/" not in rest and "importlib" not in rest and "<frozen" not in rest, rest
    return first, rest


def test_module_raising_on_import(tmp_path):
    (tmp_path / "brokenapp.py").write_text(
        "def connect():\n    raise ValueError('boom')\n\nconnect()\n")
    line, trace = app_error(run_cli("run", "brokenapp:app", "--bind", ":0", cwd=tmp_path))
    assert line == "tailfast: cannot import 'app' from 'brokenapp': ValueError: boom"
    assert trace.splitlines()[0] == "Traceback (most recent call last):"
    assert f'File "{tmp_path / "brokenapp.py"}", line 4, in <module>' in trace
    assert f'File "{tmp_path / "brokenapp.py"}", line 2, in connect' in trace
    assert trace.splitlines()[-1] == "ValueError: boom"


def test_a_nested_missing_import_points_at_the_line(tmp_path):
    (tmp_path / "myapp.py").write_text("import helpers\n\ndef app(request):\n    return b''\n")
    (tmp_path / "helpers.py").write_text('"""Helpers."""\nimport nonexistent_mod\n')
    line, trace = app_error(run_cli("run", "myapp:app", "--bind", ":0", cwd=tmp_path))
    assert line == ("tailfast: cannot import 'app' from 'myapp': "
                    "ModuleNotFoundError: No module named 'nonexistent_mod'")
    assert f'File "{tmp_path / "myapp.py"}", line 1, in <module>' in trace
    assert f'File "{tmp_path / "helpers.py"}", line 2, in <module>' in trace
    assert "import nonexistent_mod" in trace


def test_a_syntax_error_points_at_the_line(tmp_path):
    (tmp_path / "typo.py").write_text("x = 1\ndef app(request)\n    return b''\n")
    line, trace = app_error(run_cli("run", "typo:app", "--bind", ":0", cwd=tmp_path))
    assert line.startswith("tailfast: cannot import 'app' from 'typo': SyntaxError")
    assert f'File "{tmp_path / "typo.py"}", line 2' in trace
    assert trace.splitlines()[-1].startswith("SyntaxError")


def test_a_missing_package_of_the_named_module_is_one_line():
    line = single_line_error(run_cli("run", "nopackage.inner:app", "--bind", ":0"))
    assert line == ("tailfast: cannot import 'app' from 'nopackage.inner': "
                    "No module named 'nopackage'")


def test_ipv6_bind(run_server):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    server = run_server("testapp:app", "--bind", "[::1]:0", "--workers", "1")
    assert server.url.startswith("http://[::1]:")
    status, _, body = http_request(server.port, host="::1", path="/info")
    assert status == 200 and b'"remote_addr":"::1"' in body.replace(b" ", b"")


def test_unix_socket_bind(run_server, tmp_path):
    path = tmp_path / "tf.sock"
    server = run_server("testapp:app", "--bind", f"unix:{path}", "--workers", "1")
    assert server.url == f"unix:{path}"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"Hello, World!")
    server.stop()
    assert not path.exists()
