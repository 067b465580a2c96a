"""Starting a server: configuration, application and socket in Python, then the C primary."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tailfast import _core
from tailfast.app import detect_interface
from tailfast.config import Config, load_config
from tailfast.listen import create_listener, listener_url, remove_unix_socket


def log(message: str) -> None:
    sys.stderr.write(f"tailfast: {message}\n")
    sys.stderr.flush()


def export_file_environ(config: Config) -> None:
    """Makes .env values visible to the app, never overriding the real environment."""
    for name, value in config.file_environ.items():
        os.environ.setdefault(name, value)


def run(
    app: Callable[..., Any],
    config: Config,
    on_worker_start: Callable[[int], None] | None = None,
) -> int:
    """Serves app with config until stopped; returns the primary's exit status."""
    handler = app
    if detect_interface(app, config.interface) == "wsgi":
        from tailfast.wsgi import wsgi_handler

        handler = wsgi_handler(app)
    sock = create_listener(config)
    try:
        url = listener_url(sock, config)
        log(
            f"primary {os.getpid()} listening on {url} "
            f"({config.workers} worker{'s' if config.workers != 1 else ''}, {config.env})"
        )
        settings = {
            "listen_fd": sock.fileno(),
            "workers": config.workers,
            "graceful_timeout": config.graceful_timeout,
            "keepalive_timeout": config.keepalive_timeout,
            "header_timeout": config.header_timeout,
            "body_timeout": config.body_timeout,
            "request_timeout": config.request_timeout,
            "limit_request_body": config.limit_request_body,
            "limit_request_line": config.limit_request_line,
            "limit_request_fields": config.limit_request_fields,
            "limit_request_field_size": config.limit_request_field_size,
            "max_connections": config.max_connections,
        }
        # Objects alive now are shared copy-on-write with every worker; freezing
        # them keeps the collector from touching (and so copying) their pages.
        gc.collect()
        gc.freeze()
        return int(_core.run_primary(handler, settings, on_worker_start))
    finally:
        sock.close()
        remove_unix_socket(config)


def serve(
    app: Callable[..., Any],
    on_worker_start: Callable[[int], None] | None = None,
    **settings: Any,
) -> int:
    """Runs app on every core, like `tailfast run`; settings are the CLI's
    (bind=":0", workers=2, ...). Blocks until the server stops."""
    raw: Mapping[str, str | None] = {
        name: None if value is None else str(value) for name, value in settings.items()
    }
    config = load_config(raw)
    export_file_environ(config)
    return run(app, config, on_worker_start)
