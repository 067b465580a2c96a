"""Proxy headers: X-Forwarded-For/-Proto and Forwarded, from trusted peers only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, http_request, server_env

from tailfast.headers import Headers
from tailfast.proxy import parse_allow_ips


def resolve(allow: str, peer: str, *headers: tuple[str, str]) -> tuple[str, str]:
    return parse_allow_ips(allow).resolve(peer, Headers(list(headers)))


def test_untrusted_peer_keeps_its_own_address():
    assert resolve("10.0.0.0/8", "127.0.0.1", ("X-Forwarded-For", "1.2.3.4"),
                   ("X-Forwarded-Proto", "https")) == ("127.0.0.1", "http")
    assert resolve("", "127.0.0.1", ("Forwarded", "for=1.2.3.4")) == ("127.0.0.1", "http")


def test_rightmost_untrusted_address_is_the_client():
    # the client forged the first entry; the proxy appended what it saw
    assert resolve("127.0.0.1", "127.0.0.1",
                   ("X-Forwarded-For", "6.6.6.6, 203.0.113.7")) == ("203.0.113.7", "http")
    # a chain of trusted proxies is skipped
    assert resolve("127.0.0.1,10.0.0.0/8", "127.0.0.1",
                   ("X-Forwarded-For", "203.0.113.7, 10.1.2.3"),
                   ("X-Forwarded-For", "10.9.9.9")) == ("203.0.113.7", "http")
    # every hop trusted: the leftmost
    assert resolve("*", "192.0.2.1", ("X-Forwarded-For", "10.0.0.1, 10.0.0.2"))[0] == "10.0.0.1"
    # garbage stops the walk at the last good hop
    assert resolve("127.0.0.1", "127.0.0.1",
                   ("X-Forwarded-For", "203.0.113.7, not-an-ip"))[0] == "127.0.0.1"
    assert resolve("127.0.0.1", "127.0.0.1",
                   ("X-Forwarded-For", "[2001:db8::1]:443"))[0] == "2001:db8::1"


def test_scheme_from_x_forwarded_proto():
    assert resolve("127.0.0.1", "127.0.0.1", ("X-Forwarded-Proto", "HTTPS")) == (
        "127.0.0.1", "https")
    assert resolve("127.0.0.1", "127.0.0.1", ("X-Forwarded-Proto", "http, https"))[1] == "https"
    assert resolve("127.0.0.1", "127.0.0.1", ("X-Forwarded-Proto", "bad value!"))[1] == "http"


def test_forwarded_header_rfc_7239():
    assert resolve("127.0.0.1", "127.0.0.1",
                   ("Forwarded", 'for=6.6.6.6;proto=http, for="203.0.113.7:4711";proto=https')
                   ) == ("203.0.113.7", "https")
    assert resolve("127.0.0.1", "127.0.0.1",
                   ("Forwarded", 'for="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.1')
                   ) == ("2001:db8:cafe::17", "https")
    assert resolve("127.0.0.1", "127.0.0.1", ("Forwarded", "for=unknown")) == (
        "127.0.0.1", "http")
    # both present: X-Forwarded-For wins (nginx appends to it, passes Forwarded through)
    assert resolve("127.0.0.1", "127.0.0.1", ("Forwarded", "for=6.6.6.6"),
                   ("X-Forwarded-For", "203.0.113.7"))[0] == "203.0.113.7"


def test_unix_socket_peers_and_ipv4_mapped_peers():
    assert resolve("127.0.0.1", "", ("X-Forwarded-For", "203.0.113.7"))[0] == "203.0.113.7"
    assert resolve("127.0.0.1", "::ffff:127.0.0.1",
                   ("X-Forwarded-For", "203.0.113.7"))[0] == "203.0.113.7"


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "nonsense", "*,10.0.0.1", "1.2.3.4/8/1"])
def test_bad_allow_list_is_one_line_and_exit_2(bad):
    env = server_env()
    result = subprocess.run(
        [sys.executable, "-m", "tailfast", "run", "deployapp:app", "--bind", ":0",
         "--forwarded-allow-ips", bad],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=30,
    )
    assert result.returncode == 2
    assert "forwarded_allow_ips" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


HEADERS = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Forwarded-Proto": "https"}


def test_native_handler_sees_the_forwarded_client(run_server):
    server = run_server("deployapp:app", "--bind", ":0", "--workers", "1")  # default 127.0.0.1
    info = json.loads(http_request(server.port, path="/", headers=HEADERS)[2])
    assert (info["remote_addr"], info["scheme"]) == ("203.0.113.7", "https")
    info = json.loads(http_request(server.port, path="/")[2])
    assert (info["remote_addr"], info["scheme"]) == ("127.0.0.1", "http")


def test_headers_from_an_untrusted_peer_are_ignored(run_server):
    server = run_server("deployapp:app", "--bind", ":0", "--workers", "1",
                        "--forwarded-allow-ips", "10.0.0.0/8")
    info = json.loads(http_request(server.port, path="/", headers=HEADERS)[2])
    assert (info["remote_addr"], info["scheme"]) == ("127.0.0.1", "http")


def test_wsgi_environ_follows(run_server):
    server = run_server("deployapp:wsgi", "--bind", ":0", "--workers", "1",
                        "--forwarded-allow-ips", "127.0.0.0/8, ::1")
    assert http_request(server.port, path="/", headers=HEADERS)[2] == b"203.0.113.7 https"
    forwarded = {"Forwarded": 'for="[2001:db8::5]:1234";proto=https'}
    assert http_request(server.port, path="/", headers=forwarded)[2] == b"2001:db8::5 https"
    assert http_request(server.port, path="/")[2] == b"127.0.0.1 http"
