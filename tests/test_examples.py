"""The examples, run with the exact `tailfast run` lines of README's "Run your app"."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT, http_request, server_env

# What "/" answers for each example's module, and the framework it needs.
EXPECTED = {
    "examples.hello": (b"Hello, World!", None),
    "examples.hello_wsgi": (b"Hello, World!", None),
    "examples.flask_app": (b"Hello from Flask!", "flask"),
    "examples.django_site.wsgi": (b"Hello from Django!", "django"),
    "examples.django_site.asgi": (b"Hello from Django!", "django"),
    "examples.fastapi_app": (b"Hello from FastAPI!", "fastapi"),
}


def readme_commands() -> list[str]:
    """The `tailfast run ...` commands in the table of README's "Run your app"."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Run your app\n(.*?)^## ", text, re.DOTALL | re.MULTILINE)
    assert section is not None, "README.md has no 'Run your app' section"
    return re.findall(r"^\|.*\| `(tailfast run [^`]+)` \|$", section.group(1), re.MULTILINE)


def test_every_example_has_a_line_in_the_readme():
    modules = [shlex.split(c)[2].split(":")[0] for c in readme_commands()]
    assert sorted(modules) == sorted(EXPECTED)


@pytest.mark.parametrize("command", readme_commands())
def test_the_readme_line_serves_the_example(run_server, command):
    words = shlex.split(command)
    assert words[:2] == ["tailfast", "run"]
    body, framework = EXPECTED[words[2].split(":")[0]]
    if framework is not None and importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    server = run_server(*words[2:], "--bind", "127.0.0.1:0", "--workers", "1")
    status, _, answer = http_request(server.port)
    assert (status, answer) == (200, body)


def test_run_help_shows_each_interface_with_an_example():
    result = subprocess.run([sys.executable, "-m", "tailfast", "run", "--help"],
                            capture_output=True, text=True, env=server_env(), cwd=str(ROOT),
                            timeout=30)
    assert result.returncode == 0, result.stderr
    epilog = result.stdout.split("interfaces (", 1)[1]
    assert re.search(r"^  native  handler\(request\)", epilog, re.MULTILINE)
    assert re.search(r"^  wsgi    app\(environ, start_response\)", epilog, re.MULTILINE)
    for command in readme_commands():
        assert command in epilog, command
