"""--reload: a watcher process that checks that changed code imports, then asks the primary to roll.

Three processes, each with one job:

- the primary (C supervisor) never imports the application in reload mode
  (no preload); on SIGHUP it re-reads the configuration and replaces the
  workers one at a time, each new one ready before the old one drains;
- the watcher (`python -m tailfast.reload watch`, started by the primary with
  the primary's start environment) waits for changes with watchfiles;
- for each batch of changes, a checker (`python -m tailfast.reload check`, a
  fresh interpreter) reads the configuration as the next workers will and
  imports the application and its hooks. Only when that succeeds does the
  watcher send SIGHUP. A failed import is printed once, with the
  application's traceback, and the old workers keep serving: no roll starts,
  so no new worker fails, backs off and prints the same error again.

A configuration error found by the checker is left to the primary, which
reports it on the SIGHUP like any other and keeps the configuration in force.
"""

from __future__ import annotations

import ctypes
import fnmatch
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import PurePath
from typing import Any

from tailfast.errors import ConfigError
from tailfast.log import ERROR, INFO, LEVELS, WARNING, log, set_level

# Exit statuses of the checker.
CHECK_OK = 0
CHECK_FAILED = 1  # the application (or a hook) does not import: printed on stderr
CHECK_CONFIG = 4  # a bad setting: the primary reports it on SIGHUP
CHECK_INTERRUPTED = -1  # the checker was killed (Ctrl+C reaches the whole process group)
CHECK_TIMEOUT = 60.0  # seconds, as long as a new worker may take to become ready

SOURCE_GLOBS = ("*.py",)
ENV_GLOBS = (".env", ".env.*")  # in the working directory
PR_SET_PDEATHSIG = 1
WAKE_MS = 500  # the watcher wakes this often when nothing changes (to say it watches)


@dataclass(frozen=True)
class WatchPlan:
    """What the watcher watches and what it checks (passed to it as JSON)."""

    primary: int  # pid to send SIGHUP
    app: str  # MODULE:CALLABLE as given
    cli: dict[str, Any]  # the flags as given, for the checker's load_config
    cwd: str
    dirs: tuple[str, ...]  # absolute; .py and --reload-include files below them
    env_file: str  # absolute path of the base .env file (--env-file or ./.env)
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    log_level: str
    environ: dict[str, str]  # the primary's start environment: the watcher's and checker's

    def start(self) -> subprocess.Popen[bytes]:
        """Starts the watcher process (stdout and stderr shared with the primary)."""
        plan = asdict(self)
        environ = plan.pop("environ")
        return subprocess.Popen(
            [sys.executable, "-m", "tailfast.reload", "watch", json.dumps(plan)],
            env=environ, cwd=self.cwd, stdin=subprocess.DEVNULL, close_fds=True,
        )


def require_watchfiles() -> None:
    if importlib.util.find_spec("watchfiles") is None:
        raise ConfigError("--reload needs the watchfiles package: "
                          "pip install 'tailfast[reload]' (or pip install watchfiles)")


def plan_watch(config: Any, source: Any, app: str | None) -> WatchPlan:
    """The watcher's plan for a --reload server; ConfigError (a start-up error)
    when it cannot run. Warns when the mode is production."""
    require_watchfiles()
    if source is None or not app:
        raise ConfigError("--reload needs an application named MODULE:CALLABLE "
                          "(tailfast run), whose files it watches")
    cwd = source.cwd
    dirs = []
    for directory in config.reload_dirs or (cwd,):
        path = os.path.abspath(os.path.join(cwd, directory))
        if not os.path.isdir(path):
            raise ConfigError(f"invalid reload_dirs {directory!r} (from "
                              f"{config.sources.get('reload_dirs')}): expected a directory")
        dirs.append(path)
    if config.env == "production":
        log(f"warning: --reload in mode 'production' (from {config.sources.get('env')}): "
            "reloading is for development; use --env development (or TAILFAST_ENV) there, "
            "and SIGHUP to deploy new code in production", WARNING)
    return WatchPlan(
        primary=os.getpid(), app=app, cli=_jsonable(source.cli), cwd=cwd, dirs=tuple(dirs),
        env_file=os.path.abspath(os.path.join(cwd, config.env_file or ".env")),
        include=tuple(config.reload_include), exclude=tuple(config.reload_exclude),
        log_level=config.log_level, environ=dict(source.environ),
    )


def _jsonable(cli: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cli.items()}


def stop_watcher(watcher: subprocess.Popen[bytes]) -> None:
    """Ends the watcher (and so its checker, which dies with it) and reaps it."""
    if watcher.poll() is None:  # the supervisor may have reaped it: then it is gone
        watcher.terminate()
        try:
            watcher.wait(5)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.wait(5)


# ----------------------------------------------------------------- which files


def _matches(relative: str, glob: str) -> bool:
    """glob against a file's name, its path below the watched directory, or
    (for a glob without '/') any directory on that path."""
    path = PurePath(relative)
    if fnmatch.fnmatch(path.name, glob) or fnmatch.fnmatch(relative, glob) or path.match(glob):
        return True
    return "/" not in glob and any(fnmatch.fnmatch(part, glob) for part in path.parts[:-1])


def make_filter(plan: WatchPlan) -> Any:
    """The watchfiles filter: the .env files, and below the watched directories
    *.py and --reload-include files not matching --reload-exclude (nor
    watchfiles' defaults: __pycache__, .git, virtualenvs, editor files)."""
    from watchfiles import DefaultFilter

    class ReloadFilter(DefaultFilter):
        def __call__(self, change: Any, path: str) -> bool:
            full = os.path.abspath(path)
            name = os.path.basename(full)
            if full == plan.env_file or (
                    os.path.dirname(full) == plan.cwd
                    and any(fnmatch.fnmatch(name, g) for g in ENV_GLOBS)):
                return not any(_matches(name, g) for g in plan.exclude)
            base = next((d for d in plan.dirs if full.startswith(os.path.join(d, ""))), None)
            if base is None or not super().__call__(change, path):
                return False
            relative = os.path.relpath(full, base)
            if any(_matches(relative, g) for g in plan.exclude):
                return False
            return any(_matches(relative, g) for g in SOURCE_GLOBS + plan.include)

    return ReloadFilter()


def watch_paths(plan: WatchPlan) -> list[str]:
    """The directories to watch: the --reload-dir ones (or the working
    directory) and those holding the .env files."""
    paths = {*plan.dirs, plan.cwd, os.path.dirname(plan.env_file)}
    return sorted(p for p in paths if os.path.isdir(p))


# ----------------------------------------------------------------- processes


def _die_with_parent(parent: int) -> None:
    """This process gets SIGTERM when its parent ends (no watcher outlives its
    primary, no checker its watcher); exits now if the parent is gone already."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)


def _shown_dirs(plan: WatchPlan) -> list[str]:
    shown = [os.path.relpath(d, plan.cwd) for d in plan.dirs]
    return [d if d != "." else "the working directory" for d in shown]


def _changed(changes: set[tuple[Any, str]], cwd: str) -> str:
    names = sorted({os.path.relpath(path, cwd) for _, path in changes})
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def watch_main(plan: WatchPlan) -> int:
    """The watcher: for each batch of changes, the check, then SIGHUP when it passed."""
    _die_with_parent(plan.primary)
    # Ctrl+C reaches the whole process group: the primary decides, and its
    # stop ends this process; SIGTERM ends it at once (nothing to clean up).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    set_level(LEVELS[plan.log_level])
    from watchfiles import watch

    last_error, watching = "", False
    # yield_on_timeout: the first (empty) batch says the watches are in place
    for changes in watch(*watch_paths(plan), watch_filter=make_filter(plan),
                         raise_interrupt=False, ignore_permission_denied=True,
                         rust_timeout=WAKE_MS, yield_on_timeout=True):
        if not watching:
            watching = True
            log(f"reload: watching {', '.join(_shown_dirs(plan))} for changes", INFO)
        if not changes:
            continue
        log(f"reload: {_changed(changes, plan.cwd)} changed; checking that the application "
            "imports", INFO)
        status, error = _check(plan)
        if status == CHECK_INTERRUPTED:
            continue
        if status == CHECK_FAILED:
            if error != last_error:  # once: a save that changes nothing says so briefly
                sys.stderr.write(error)
                sys.stderr.flush()
            last_error = error
            log("reload: the new code does not import; the old workers keep serving "
                "(save a fix to roll)", ERROR)
            continue
        last_error = ""
        if status == CHECK_OK:
            log("reload: the application imports; rolling the workers", INFO)
        try:
            os.kill(plan.primary, signal.SIGHUP)  # CHECK_CONFIG too: the primary reports it
        except ProcessLookupError:
            return 0
    return 0


def _check(plan: WatchPlan) -> tuple[int, str]:
    """Runs the checker in a fresh interpreter; its status and what it printed."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tailfast.reload", "check", json.dumps(asdict(plan) | {
                "environ": {}}), str(os.getpid())],
            cwd=plan.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, errors="replace", check=False,
            timeout=CHECK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:  # run() has killed it
        return CHECK_FAILED, (f"tailfast: reload: the application did not finish importing "
                              f"in {CHECK_TIMEOUT:.0f} s\n")
    if result.returncode < 0:
        return CHECK_INTERRUPTED, ""
    if result.returncode not in (CHECK_OK, CHECK_CONFIG):
        return CHECK_FAILED, result.stderr or (
            f"tailfast: reload: the import check ended with status {result.returncode}\n")
    return result.returncode, result.stderr


def check_main(plan: WatchPlan, watcher: int) -> int:
    """The checker: the configuration and environment the next workers get,
    then the application and its hooks imported as a worker imports them."""
    _die_with_parent(watcher)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from tailfast.app import application_traceback, detect_interface, import_app, parse_app_spec
    from tailfast.config import load_config
    from tailfast.errors import AppImportError

    try:
        config = load_config(plan.cli)
    except ConfigError:
        return CHECK_CONFIG
    for name, value in config.file_environ.items():
        os.environ.setdefault(name, value)  # as the primary exports them to its workers
    try:
        app = import_app(parse_app_spec(plan.app, config.factory))
        detect_interface(app, config.interface)
        for hook in (config.on_worker_start, config.on_worker_exit):
            if hook:
                import_app(hook)
    except AppImportError as exc:
        details = exc.details.rstrip()
        sys.stderr.write(f"tailfast: reload: {exc}\n" + (details + "\n" if details else ""))
        return CHECK_FAILED
    except BaseException as exc:  # noqa: B036 - application code: whatever it raised
        sys.stderr.write(f"tailfast: reload: {type(exc).__name__}: {exc}\n"
                         + application_traceback(exc))
        return CHECK_FAILED
    return CHECK_OK


def main(argv: list[str]) -> int:
    command, plan_json, *rest = argv
    fields = json.loads(plan_json)
    fields.setdefault("environ", {})
    for name in ("dirs", "include", "exclude"):
        fields[name] = tuple(fields[name])
    plan = WatchPlan(**fields)
    if command == "watch":
        return watch_main(plan)
    code = check_main(plan, int(rest[0]))
    sys.stderr.flush()
    os._exit(code)  # no atexit work of the application's: it was only imported to check


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
