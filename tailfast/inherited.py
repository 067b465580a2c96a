"""Finding sockets the primary opened before fork, which every worker would share.

A client connection (Redis, a database) opened while the application is
imported in the primary is inherited by every worker after fork; workers then
interleave their traffic on one connection and corrupt each other's replies.
The primary cannot fix that, but it can name the culprits before forking.
"""

from __future__ import annotations

import os
import socket


def _describe(fd: int) -> str | None:
    """'a connection to HOST:PORT' (or similar) for a socket fd, None if fd is not one."""
    try:
        if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
            return None
    except OSError:
        return None
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return "a socket"
    try:
        kind = {socket.SOCK_STREAM: "TCP", socket.SOCK_DGRAM: "UDP"}.get(sock.type, "")
        if sock.family == socket.AF_UNIX:
            kind = "unix"
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        if peer:
            return f"a {kind} connection to {_address(peer)}".replace("a  ", "a ")
        try:
            local = sock.getsockname()
        except OSError:
            local = None
        return f"a {kind} socket bound to {_address(local)}" if local else f"a {kind} socket"
    finally:
        sock.close()


def _address(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(addr, bytes):
        return addr.decode("utf-8", "replace") or "(unnamed)"
    return str(addr) or "(unnamed)"


def inherited_sockets(keep: set[int]) -> list[tuple[int, str]]:
    """(fd, description) of every open socket except stdio and the fds in keep."""
    found = []
    try:
        fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    except OSError:
        return found
    for fd in fds:
        if fd <= 2 or fd in keep:
            continue
        description = _describe(fd)
        if description is not None:
            found.append((fd, description))
    return found


def warning_lines(keep: set[int]) -> list[str]:
    """The start-up warnings to log, one per inherited socket."""
    return [
        f"warning: fd {fd} ({description}) was opened before fork and is shared by every "
        "worker; open connections per worker in an --on-worker-start hook instead"
        for fd, description in inherited_sockets(keep)
    ]
