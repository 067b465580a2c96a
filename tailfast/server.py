"""Starting a server: configuration, application and socket in Python, then the C primary."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from tailfast import _core
from tailfast.app import detect_interface
from tailfast.config import Config, load_config
from tailfast.inherited import warning_lines
from tailfast.listen import (
    create_listener,
    listener_url,
    migrate_req_enabled,
    remove_unix_socket,
    reuseport_socket,
)


def log(message: str) -> None:
    sys.stderr.write(f"tailfast: {message}\n")
    sys.stderr.flush()


def export_file_environ(config: Config) -> None:
    """Makes .env values visible to the app, never overriding the real environment."""
    for name, value in config.file_environ.items():
        os.environ.setdefault(name, value)


def as_handler(
    app: Callable[..., Any], interface: str, script_name: str = ""
) -> Callable[..., Any]:
    """The native handler serving app (a WSGI app is wrapped)."""
    if detect_interface(app, interface) == "wsgi":
        from tailfast.wsgi import wsgi_handler

        return wsgi_handler(app, script_name)
    return app


def scoreboard_dirs() -> list[str]:
    """Where scoreboard files go, first usable first: /dev/shm (memory), then tmp."""
    return ["/dev/shm", tempfile.gettempdir()]


def scoreboard_path(pid: int) -> str:
    """The scoreboard file a primary with this pid creates."""
    name = f"tailfast-{pid}.scoreboard"
    for directory in scoreboard_dirs():
        if os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK):
            return os.path.join(directory, name)
    return os.path.join(tempfile.gettempdir(), name)


Hook = Callable[[int], Any]
Loaded = tuple[Callable[..., Any], Hook | None, Hook | None]  # app, on-start, on-exit


def run(
    app: Callable[..., Any] | None,
    config: Config,
    on_worker_start: Hook | None = None,
    reload: Callable[[], Loaded] | None = None,
    on_worker_exit: Hook | None = None,
) -> int:
    """Serves app with config until stopped; returns the primary's exit status.

    reload() returns (app, on_worker_start, on_worker_exit) as they are on
    disk now: workers forked after a SIGHUP call it (rolling restart with new
    code), and every worker does when config.preload is off (app is then
    None: the primary never imports it). Without reload, a
    SIGHUP still replaces every worker, with the code already loaded."""
    handler = None if app is None else as_handler(app, config.interface, config.script_name)
    reuseport = config.balance == "reuseport"
    sock = create_listener(config, reuseport=reuseport)
    pid_file = config.pid_file
    try:
        url = listener_url(sock, config)
        worker_setup = None
        if reuseport:
            if migrate_req_enabled() is False:
                log(
                    "warning: --balance reuseport with net.ipv4.tcp_migrate_req = 0: "
                    "connections queued on a worker that exits are reset "
                    "(sysctl -w net.ipv4.tcp_migrate_req=1 hands them to another worker)"
                )
            address, family, backlog = sock.getsockname(), sock.family, config.backlog

            def worker_setup(worker_id: int) -> int:
                own = reuseport_socket(address, family, backlog)
                return own.detach()  # the worker's loop owns the descriptor now

        log(
            f"primary {os.getpid()} listening on {url} "
            f"({config.workers} worker{'s' if config.workers != 1 else ''}, {config.env})"
        )
        for line in warning_lines({sock.fileno()}):
            log(line)
        if pid_file:
            with open(pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        settings = {
            "listen_fd": sock.fileno(),
            "queue_fd": -1 if reuseport else sock.fileno(),
            "listen_url": url,
            "scoreboard_path": scoreboard_path(os.getpid()),
            "workers": config.workers,
            "graceful_timeout": config.graceful_timeout,
            "keepalive_timeout": config.keepalive_timeout,
            "request_timeout": config.request_timeout,
            "limit_request_body": config.limit_request_body,
            "max_connections": config.max_connections,
            "balance": config.balance,
            "max_requests": config.max_requests,
            "max_requests_jitter": config.max_requests_jitter,
            "max_rss": config.max_rss * 1024 * 1024,
        }

        def reload_handler() -> tuple[Callable[..., Any], Hook | None, Hook | None]:
            assert reload is not None
            new_app, start_hook, exit_hook = reload()
            return as_handler(new_app, config.interface, config.script_name), start_hook, exit_hook

        # Objects alive now are shared copy-on-write with every worker; freezing
        # them keeps the collector from touching (and so copying) their pages.
        gc.collect()
        gc.freeze()
        return int(
            _core.run_primary(
                handler,
                settings,
                on_worker_start,
                reload_handler if reload is not None else None,
                worker_setup,
                on_worker_exit,
                config.preload or reload is None,
            )
        )
    finally:
        sock.close()
        remove_unix_socket(config)
        if pid_file:
            try:
                with open(pid_file) as f:
                    mine = f.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(pid_file)
            except OSError:
                pass


def serve(
    app: Callable[..., Any],
    on_worker_start: Hook | None = None,
    on_worker_exit: Hook | None = None,
    **settings: Any,
) -> int:
    """Runs app on every core, like `tailfast run`; settings are the CLI's
    (bind=":0", workers=2, ...). on_worker_start(worker_id) runs in each
    worker before it accepts (open connections there), on_worker_exit(worker_id)
    when it stops. Blocks until the server stops."""
    raw: Mapping[str, str | None] = {
        name: None if value is None else str(value) for name, value in settings.items()
    }
    config = load_config(raw)
    export_file_environ(config)
    return run(app, config, on_worker_start, on_worker_exit=on_worker_exit)
