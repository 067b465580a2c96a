"""The snippets of docs/deployment.md, exercised where this machine allows
(the nginx block is run by tests/test_nginx.py)."""

from __future__ import annotations

import configparser
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml
from conftest import ROOT, Server, children, http_request
from docsnippets import snippet

from tailfast.config import available_cpus, load_config

parser = pytest.importorskip("prometheus_client.parser")


def cli_settings(args: list[str]) -> dict[str, str]:
    """`--flag value` pairs of a tailfast command line, as load_config's cli mapping."""
    settings: dict[str, str] = {}
    i = 0
    while i < len(args):
        if args[i].startswith("--"):
            settings[args[i][2:].replace("-", "_")] = args[i + 1]
            i += 2
        else:
            i += 1
    return settings


# ------------------------------------------------------------------- systemd


def unit(name: str) -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None, strict=False)
    config.optionxform = str  # type: ignore[assignment,method-assign]
    config.read_string(snippet(name))
    return config


def test_systemd_units_are_consistent():
    socket_unit, service = unit("systemd-socket"), unit("systemd-service")
    command = shlex.split(service["Service"]["ExecStart"])
    assert command[:2] == ["/usr/bin/tailfast", "run"]
    settings = cli_settings(command[3:])
    config = load_config(settings, environ={}, cwd=ROOT)  # every flag is a real one
    assert service["Service"]["KillMode"] == "mixed"
    assert service["Service"]["KillSignal"] == "SIGTERM"
    assert float(service["Service"]["TimeoutStopSec"]) > config.graceful_timeout
    assert "kill -HUP $MAINPID" in service["Service"]["ExecReload"]
    assert service["Unit"]["Requires"] == "myapp.socket"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", socket_unit["Socket"]["ListenStream"])


def socket_activation_available() -> bool:
    sources = [*ROOT.glob("tailfast/*.py"), *ROOT.glob("tailfast/*.pyx"), *ROOT.glob("csrc/*.c")]
    return any("LISTEN_FDS" in path.read_text() for path in sources)


LAUNCHER = textwrap.dedent("""
    # what systemd does for a socket unit: the socket as fd 3, LISTEN_* set, exec
    import os, sys
    fd = int(sys.argv[1])
    os.dup2(fd, 3)
    if fd != 3:
        os.close(fd)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDNAMES"] = "myapp.socket"
    os.execvp(sys.argv[2], sys.argv[2:])
""")


@pytest.mark.skipif(not socket_activation_available(),
                    reason="socket activation (LISTEN_FDS) is not in this tree yet: it arrives "
                           "with issue 5 (systemd socket activation, --fd, sd_notify)")
def test_systemd_socket_activation_serves_on_the_passed_socket(tmp_path):
    socket_unit, service = unit("systemd-socket"), unit("systemd-service")
    host, _, _ = socket_unit["Socket"]["ListenStream"].rpartition(":")
    listener = socket.socket()
    listener.bind((host, 0))  # the unit's address; any free port instead of 8000
    listener.listen(int(socket_unit["Socket"]["Backlog"]))
    port = listener.getsockname()[1]
    command = shlex.split(service["Service"]["ExecStart"])
    args = [a.replace("myapp:app", "deployapp:app") for a in command[2:]]
    args[args.index("--access-log") + 1] = str(tmp_path / "access.log")
    server = Server([*args, "--workers", "2"], prefix=[sys.executable, "-c", LAUNCHER,
                                                       str(listener.fileno())],
                    pass_fds=(listener.fileno(),), stdout=False)
    listener.close()  # tailfast holds it now
    with server:
        server.wait_listening()
        status, _, body = http_request(port, path="/")
        assert status == 200 and json.loads(body)["path"] == "/"
        assert http_request(port, path="/healthz")[0] == 200
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
    assert not server.leftovers()


# ---------------------------------------------------------------- container


def instruction(dockerfile: str, name: str) -> list[str]:
    match = re.search(rf"^{name}\s+(.*)$", dockerfile, re.MULTILINE)
    assert match, name
    value = json.loads(match.group(1))  # exec form: a JSON array, no shell in between
    assert isinstance(value, list)
    return value


def can_unshare_pid() -> bool:
    if shutil.which("unshare") is None:
        return False
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                            capture_output=True, timeout=10)
    return result.returncode == 0


@pytest.mark.skipif(not can_unshare_pid(), reason="cannot create a PID namespace here")
def test_container_entrypoint_runs_as_pid_1_and_stops_on_sigterm():
    dockerfile = snippet("dockerfile")
    entrypoint, cmd = instruction(dockerfile, "ENTRYPOINT"), instruction(dockerfile, "CMD")
    assert entrypoint == ["tailfast", "run"]
    args = ["deployapp:app" if a == "myapp:app" else a for a in cmd]
    args[args.index("--bind") + 1] = "127.0.0.1:0"  # 0.0.0.0 inside a container only
    # a new PID namespace, as in a container: tailfast is its PID 1
    server = Server(args, prefix=["unshare", "--pid", "--fork", "--mount-proc"])
    with server:  # PID 1's end takes the whole namespace with it
        # the scoreboard is named after the primary's pid, 1 in every namespace
        # (another one's may be there too): the readiness probe says when it serves
        server.wait_listening(ready=False)
        assert server.primary_pid == 1  # "primary 1 listening on ..."
        server.probe("/readyz")
        assert http_request(server.port, path="/healthz")[0] == 200
        assert http_request(server.port, path="/readyz")[0] == 200
        assert http_request(server.port, path="/x")[0] == 200
        (primary,) = children(server.proc.pid)
        os.kill(primary, signal.SIGTERM)  # what the container runtime sends to PID 1
        assert server.wait(15) == 0
        assert "stopping gracefully" in server.output and "primary 1 stopped" in server.output
        assert '"GET /x HTTP/1.1" 200' in server.stdout  # --access-log -


# --------------------------------------------------------------- kubernetes


def deployment() -> dict:
    return yaml.safe_load(snippet("kubernetes"))


def cpu_quantity(text: str) -> float:
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_kubernetes_probes_ports_and_grace_period_match_the_flags():
    spec = deployment()["spec"]["template"]
    (container,) = spec["spec"]["containers"]
    args = container["args"]
    config = load_config(cli_settings(args), environ={}, cwd=ROOT)
    port = container["ports"][0]["containerPort"]
    assert config.bind.port == port
    assert container["livenessProbe"]["httpGet"] == {"path": config.health_path, "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": config.ready_path, "port": port}
    annotations = spec["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == config.metrics_path
    assert int(annotations["prometheus.io/port"]) == port
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    grace = spec["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(sleep[1]) + config.graceful_timeout
    assert config.workers_requested == "auto"


@pytest.mark.parametrize("limit", ["from-manifest", "1500m", "500m"])
def test_auto_workers_follow_the_cpu_limit(tmp_path, limit):
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    if limit == "from-manifest":
        limit = container["resources"]["limits"]["cpu"]
    cpus = cpu_quantity(str(limit))
    # what the kubelet writes for the limit: quota and period in microseconds
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(f"{round(cpus * 100_000)} 100000\n")
    expected = min(math.ceil(cpus), len(os.sched_getaffinity(0)))
    assert available_cpus(str(cpu_max)) == expected

    args = ["deployapp:app" if a == "myapp:app" else a for a in container["args"]]
    args[args.index("--bind") + 1] = "127.0.0.1:0"
    with Server([*args, "--cpu-max-path", str(cpu_max)], stdout=False) as server:
        server.wait_listening()  # and every worker ready
        assert server.workers == expected
        port = server.port
        assert http_request(port, path=container["livenessProbe"]["httpGet"]["path"])[0] == 200
        assert http_request(port, path=container["readinessProbe"]["httpGet"]["path"])[0] == 200
        status, _, body = http_request(port, path="/metrics")
        assert status == 200
        families = {f.name for f in parser.text_string_to_metric_families(body.decode())}
        assert "tailfast_requests" in families
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0
    assert not server.leftovers()
