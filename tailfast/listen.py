"""The listening socket, opened by the primary and inherited by every worker."""

from __future__ import annotations

import errno
import os
import socket
import stat

from tailfast.config import Config
from tailfast.errors import ConfigError

__all__ = [
    "create_listener",
    "listener_url",
    "migrate_req_enabled",
    "remove_unix_socket",
    "reuseport_socket",
]

# (pid, st_dev, st_ino) of the unix socket files created, by path, so that
# shutdown removes our own socket (in the creating process only, not in a
# forked worker) and never another server's.
_created_unix_sockets: dict[str, tuple[int, int, int]] = {}


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror or exc).lower()
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc).lower() or type(exc).__name__


def _fail(config: Config, reason: str) -> ConfigError:
    source = config.sources.get("bind", "default")
    return ConfigError(f"cannot listen on {config.bind.address} (bind from {source}): {reason}")


def _clear_stale_unix_socket(config: Config) -> None:
    """Removes a socket file left by a dead server; refuses a live one or a non-socket."""
    path = config.bind.path
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _fail(config, _reason(exc)) from None
    if not stat.S_ISSOCK(mode):
        raise _fail(config, "file exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)  # nothing listens: stale
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _fail(config, _reason(exc)) from None
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _fail(config, _reason(exc)) from None
    finally:
        probe.close()
    raise _fail(config, os.strerror(errno.EADDRINUSE).lower())


def create_listener(config: Config, reuseport: bool = False) -> socket.socket:
    """Opens, binds and listens on config.bind; raises ConfigError with one line.

    reuseport: bind with SO_REUSEPORT and do not listen. The socket only holds
    the address; each worker listens on its own socket (reuseport_socket)."""
    bind = config.bind
    if reuseport and bind.family == socket.AF_UNIX:
        raise ConfigError(
            f"invalid balance 'reuseport' (from {config.sources.get('balance', 'default')}): "
            "expected a TCP address, not a unix socket"
        )
    if bind.family == socket.AF_UNIX:
        _clear_stale_unix_socket(config)
    sock = socket.socket(bind.family, socket.SOCK_STREAM)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if bind.family == socket.AF_UNIX:
            sock.bind(bind.path)
            st = os.stat(bind.path)
            _created_unix_sockets[bind.path] = (os.getpid(), st.st_dev, st.st_ino)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if bind.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                info = socket.getaddrinfo(
                    bind.host, bind.port, socket.AF_INET6, socket.SOCK_STREAM, 0,
                    socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
                sock.bind(info[0][4])
            else:
                sock.bind((bind.host, bind.port))
        if not reuseport:
            sock.listen(config.backlog)
        sock.setblocking(False)
        sock.set_inheritable(False)
    except OSError as exc:
        sock.close()
        raise _fail(config, _reason(exc)) from None
    return sock


def listener_url(sock: socket.socket, config: Config) -> str:
    """The URL actually listened on (the real port when port 0 was asked)."""
    bind = config.bind
    if bind.family == socket.AF_UNIX:
        return bind.url
    name = sock.getsockname()
    host, port = name[0], name[1]
    if bind.family == socket.AF_INET6:
        return f"http://[{host}]:{port}"
    return f"http://{host}:{port}"


def remove_unix_socket(config: Config) -> None:
    """Removes the unix socket file create_listener made, if it is still ours."""
    bind = config.bind
    if bind.family != socket.AF_UNIX:
        return
    created = _created_unix_sockets.get(bind.path)
    if created is None or created[0] != os.getpid():
        return
    del _created_unix_sockets[bind.path]
    try:
        st = os.lstat(bind.path)
        if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == created[1:]:
            os.unlink(bind.path)
    except OSError:
        pass


def reuseport_socket(address: tuple[object, ...], family: int, backlog: int) -> socket.socket:
    """A worker's own listening socket in the SO_REUSEPORT group of address."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
        sock.set_inheritable(False)
    except OSError:
        sock.close()
        raise
    return sock


def migrate_req_enabled() -> bool | None:
    """net.ipv4.tcp_migrate_req: whether a closing SO_REUSEPORT socket hands its
    queued connections to another one (None: unknown)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            return f.read().strip() != "0"
    except OSError:
        return None
