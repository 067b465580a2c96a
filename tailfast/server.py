"""Starting a server: configuration, application and socket in Python, then the C primary."""

from __future__ import annotations

import gc
import os
import resource
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tailfast import _core, proxy
from tailfast.app import detect_interface, is_coroutine_callable
from tailfast.config import Config, load_config, reread_config
from tailfast.errors import ConfigError
from tailfast.inherited import warning_lines
from tailfast.listen import (
    create_listener,
    inherited_listener,
    listener_url,
    migrate_req_enabled,
    remove_unix_socket,
    reuseport_socket,
)
from tailfast.log import DEBUG, ERROR, LEVELS, WARNING, log, set_level


@dataclass(frozen=True)
class Launch:
    """What the primary knows at start besides the settings: read by
    tailfast/_settings.pxi with the Config to fill the C config structs."""

    listen_fd: int  # the socket the primary opened or inherited
    listen_url: str  # for the scoreboard and `tailfast status`
    inherited: bool  # --fd or socket activation: it outlives this server
    scoreboard_path: str | None  # None: anonymous shared memory
    notify_socket: str | None  # systemd's NOTIFY_SOCKET, for the primary alone


def export_file_environ(config: Config) -> None:
    """Makes .env values visible to the app, never overriding the real environment."""
    for name, value in config.file_environ.items():
        os.environ.setdefault(name, value)


@dataclass(frozen=True)
class ConfigSource:
    """What the configuration was read from at start, to read it again on SIGHUP."""

    cli: Mapping[str, Any]  # setting name -> the flag's raw value (None: not given)
    environ: Mapping[str, str]  # the process environment before .env values were exported
    cwd: str  # where .env and .env.<mode> are


class LiveConfig:
    """The configuration in force in the primary (the workers forked from now
    on get it), read again from its source on SIGHUP."""

    def __init__(self, config: Config, source: ConfigSource | None) -> None:
        self.config = config
        self.source = source
        self._reported: set[str] = set()  # "needs a restart" lines already logged

    def reread(self) -> Config | None:
        """The next generation's Config, applied to the primary; None (and the
        error logged as at start-up) when a value is bad: no roll."""
        assert self.source is not None
        try:
            new, notes = reread_config(self.config, self.source.cli, self.source.environ,
                                       self.source.cwd)
            check_access_log(new.access_log)
        except ConfigError as exc:
            log(f"SIGHUP: {exc}; the current configuration keeps serving (no roll)", ERROR)
            return None
        for note in notes:
            if note not in self._reported:  # once, not again at every --reload roll
                self._reported.add(note)
                log(f"SIGHUP: {note}", WARNING)
        self._apply(new)
        return new

    def _apply(self, new: Config) -> None:
        """What the primary holds for its future workers: their environment,
        the log level, trusted proxies, the descriptor limit."""
        base = self.source.environ if self.source is not None else {}
        for name in self.config.file_environ:
            if name not in base:  # the old files' value, not the process environment's
                os.environ.pop(name, None)
        for name, value in new.file_environ.items():
            if name not in base:  # the process environment wins, as at start-up
                os.environ[name] = value
        set_level(LEVELS[new.log_level])
        proxy.configure(new.forwarded_allow_ips)
        if new.max_connections != self.config.max_connections:
            raise_descriptor_limit(new)  # its warning, if any, once per change
        self.config = new


def as_handler(
    app: Callable[..., Any], interface: str, script_name: str = ""
) -> Callable[..., Any]:
    """The native handler serving app (a WSGI app is wrapped; an ASGI app or an
    async def handler is marked for the event-loop runner)."""
    kind = detect_interface(app, interface)
    if kind == "wsgi":
        from tailfast.wsgi import wsgi_handler

        return wsgi_handler(app, script_name)
    if kind == "asgi" or is_coroutine_callable(app):
        from tailfast._core import AsyncHandler

        return AsyncHandler(app, kind == "asgi", script_name)
    return app


def check_access_log(path: str) -> None:
    """Fails at start-up, not in every worker, when the access log cannot be written."""
    if not path or path == "-":
        return
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"invalid access_log {path!r}: cannot open it for appending: {exc.strerror}"
        ) from None


def set_process_title(title: str) -> None:
    """What ps and top show: the whole title with setproctitle (optional
    dependency), else the kernel's 15-byte name of the process."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        try:
            with open("/proc/self/comm", "w") as f:
                f.write(title.replace("tailfast: ", "tf ")[:15])
        except OSError:
            pass
        return
    setproctitle(title)


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


def remove_stale_scoreboards(directory: str) -> None:
    """Removes this user's scoreboard files whose primary is gone: one killed
    with SIGKILL cannot remove its own (a megabyte of /dev/shm each), and a
    new primary reusing its pid would be read as the old one until it starts."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        pid_text = name.removeprefix("tailfast-").removesuffix(".scoreboard")
        if not (name.startswith("tailfast-") and name.endswith(".scoreboard")
                and pid_text.isdigit()):
            continue
        path = os.path.join(directory, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            try:
                os.unlink(path)
            except OSError:
                pass
        except OSError:  # alive, ours or not, or the file went meanwhile
            continue


Hook = Callable[[int], Any]
Loaded = tuple[Callable[..., Any], Hook | None, Hook | None]  # app, on-start, on-exit


def open_listener(config: Config) -> tuple[Any, bool]:
    """The listening socket (opened, or inherited through --fd or socket
    activation) and whether it was inherited."""
    reuseport = config.balance == "reuseport"
    inherited = inherited_listener(config)
    if inherited is not None and reuseport:
        inherited.close()
        raise ConfigError(
            "invalid balance 'reuseport' (from "
            f"{config.sources.get('balance', 'default')}): each worker opens its own socket, "
            "which an inherited one (--fd, socket activation) cannot be"
        )
    if inherited is not None:
        return inherited, True
    return create_listener(config, reuseport=reuseport), False


def reuseport_setup(sock: Any, config: Config) -> Callable[[int], int]:
    """worker_setup(worker_id) -> the worker's own SO_REUSEPORT socket, bound like sock."""
    if migrate_req_enabled() is False:
        log(
            "warning: --balance reuseport with net.ipv4.tcp_migrate_req = 0: "
            "connections queued on a worker that exits are reset "
            "(sysctl -w net.ipv4.tcp_migrate_req=1 hands them to another worker)",
            WARNING,
        )
    address, family, backlog = sock.getsockname(), sock.family, config.backlog

    def worker_setup(worker_id: int) -> int:
        own = reuseport_socket(address, family, backlog)
        return own.detach()  # the worker's loop owns the descriptor now

    return worker_setup


# Descriptors a worker holds beside its connections: the listener, epoll, pipes,
# sendfile's duplicates, the access log, the application's own files and sockets.
DESCRIPTOR_MARGIN = 1024


def raise_descriptor_limit(config: Config) -> None:
    """Raises this process's soft RLIMIT_NOFILE toward the hard limit, as far as
    a worker at --max-connections needs, before the workers inherit it; says so
    once when the hard limit is lower than that. The limit is per process: each
    worker gets the whole of it, so the need is one worker's, not the sum."""
    need = config.max_connections + DESCRIPTOR_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:  # e.g. above fs.nr_open
        log(f"warning: cannot raise the open files limit from {soft} to {target}: {exc}",
            WARNING)
        return
    if target < need:
        log(f"warning: open files limit {target} (the hard limit) is below the {need} a worker "
            f"needs at --max-connections {config.max_connections}: accepts pause on EMFILE "
            "before that; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=)", WARNING)
    else:
        log(f"open files limit raised from {soft} to {target} for --max-connections "
            f"{config.max_connections}", DEBUG)


def remove_pid_file(path: str) -> None:
    """Removes the pid file if it still names this process (a successor may own it now)."""
    try:
        with open(path) as f:
            mine = f.read().strip() == str(os.getpid())
        if mine:
            os.unlink(path)
    except OSError:
        pass


def _plan_reload(config: Config, source: ConfigSource | None, name: str | None) -> Any:
    """--reload's watcher plan (tailfast.reload.WatchPlan), or None without --reload."""
    if not config.reload:
        return None
    from tailfast import reload as reloading  # not imported otherwise: `-m tailfast.reload`

    return reloading.plan_watch(config, source, name)


def _announce(config: Config, launch: Launch) -> None:
    """The listening line (tools and tests read the port from it), warnings
    about inherited descriptors, the pid file."""
    log(
        f"primary {os.getpid()} listening on {launch.listen_url} "
        f"({config.workers} worker{'s' if config.workers != 1 else ''}, {config.env})"
    )
    for line in warning_lines({launch.listen_fd}):
        log(line, WARNING)
    if config.pid_file:
        with open(config.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")


def run(
    app: Callable[..., Any] | None,
    config: Config,
    on_worker_start: Hook | None = None,
    reload: Callable[[Config], Loaded] | None = None,
    on_worker_exit: Hook | None = None,
    name: str | None = None,
    source: ConfigSource | None = None,
) -> int:
    """Serves app with config until stopped; returns the primary's exit status.

    reload(config) returns (app, on_worker_start, on_worker_exit) as they are
    on disk now: workers forked after a SIGHUP call it (rolling restart with
    new code), and every worker does when config.preload is off (app is then
    None: the primary never imports it). Without reload, a SIGHUP still
    replaces every worker, with the code already loaded. With source, a
    SIGHUP reads the configuration again (LiveConfig). name (e.g.
    "myapp:app") goes into the process titles; with --reload it is the
    application the watcher checks."""
    set_level(LEVELS[config.log_level])
    handler = None if app is None else as_handler(app, config.interface, config.script_name)
    live = LiveConfig(config, source)
    watch = _plan_reload(config, source, name)
    proxy.configure(config.forwarded_allow_ips)
    check_access_log(config.access_log)
    raise_descriptor_limit(config)
    sock, inherited = open_listener(config)
    # systemd's notification socket is the primary's alone: not the workers' or the app's
    notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
    name = name or getattr(app, "__qualname__", None) or type(app).__name__
    set_process_title(f"tailfast: primary {name}")

    def worker_start(worker_id: int) -> None:
        set_process_title(f"tailfast: worker {worker_id}")
        if on_worker_start is not None:
            on_worker_start(worker_id)

    def reload_handler() -> Loaded:
        assert reload is not None
        current = live.config  # as the last SIGHUP left it
        new_app, start_hook, exit_hook = reload(current)
        return as_handler(new_app, current.interface, current.script_name), start_hook, exit_hook

    watcher = None
    try:
        board = scoreboard_path(os.getpid())
        remove_stale_scoreboards(os.path.dirname(board))
        launch = Launch(sock.fileno(), listener_url(sock, config), inherited, board,
                        notify_socket)
        worker_setup = reuseport_setup(sock, config) if config.balance == "reuseport" else None
        _announce(config, launch)
        if watch is not None:
            watcher = watch.start()
        # Objects alive now are shared copy-on-write with every worker; freezing
        # them keeps the collector from touching (and so copying) their pages.
        gc.collect()
        gc.freeze()
        return int(
            _core.run_primary(
                handler,
                config,
                launch,
                worker_start,
                reload_handler if reload is not None else None,
                worker_setup,
                on_worker_exit,
                config.preload or reload is None,
                live.reread if source is not None else None,
            )
        )
    finally:
        if watcher is not None:
            from tailfast.reload import stop_watcher

            stop_watcher(watcher)
        sock.close()
        remove_unix_socket(config)
        if config.pid_file:
            remove_pid_file(config.pid_file)


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
    source = ConfigSource(raw, dict(os.environ), os.getcwd())
    config = load_config(raw)
    export_file_environ(config)
    return run(app, config, on_worker_start, on_worker_exit=on_worker_exit, source=source)
