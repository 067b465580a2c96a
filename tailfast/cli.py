"""The `tailfast` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tailfast.errors import TailfastError

# Shown under `tailfast run --help`: which callables it serves, one example each.
RUN_EPILOG = """\
interfaces (detected from the callable's signature; --interface to choose):
  native  handler(request) (def or async def) returning bytes, str, a dict, a Response, ...
            tailfast run examples.hello:app
  wsgi    app(environ, start_response): Flask, Django, Falcon, any PEP 3333 app
            tailfast run examples.hello_wsgi:app
            tailfast run 'examples.flask_app:create_app()'       (a factory)
            tailfast run examples.django_site.wsgi:application  (Django's wsgi.py)
  asgi    async app(scope, receive, send): FastAPI, Starlette, Django (ASGI 3)
            tailfast run examples.fastapi_app:app
            tailfast run examples.django_site.asgi:application  (Django's asgi.py)

development and deploys:
  --reload  watch the .py and .env files; when a change imports, replace the
            workers one at a time (a broken save keeps the old ones serving)
            tailfast run examples.hello:app --reload --env development
  SIGHUP    rolling restart that also reads .env and .env.<mode> again: new
            code, settings and variables; --bind, --backlog, --balance, --fd,
            --no-preload and --reload-* need a restart
            kill -HUP $(cat tailfast.pid)
"""


def build_parser() -> argparse.ArgumentParser:
    from tailfast import __version__
    from tailfast.config import SETTINGS, add_arguments

    parser = argparse.ArgumentParser(
        prog="tailfast",
        description="Run Python web handlers on every CPU core.",
    )
    parser.add_argument("--version", action="version", version=f"tailfast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    run = commands.add_parser(
        "run",
        help="serve MODULE:CALLABLE with one worker per CPU",
        description="Serve MODULE:CALLABLE (a handler(request) or a WSGI app) with a\n"
        "primary process and one worker per CPU. Every option can also be set by its\n"
        "environment variable or in .env / .env.<mode>.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "app",
        metavar="MODULE:CALLABLE",
        help="the application, e.g. myapp:app, or a factory with literal arguments, "
        "e.g. 'myapp:create_app()' or 'myapp:create_app(\"production\")'",
    )
    add_arguments(run)
    run.set_defaults(setting_names=[s.name for s in SETTINGS])
    status = commands.add_parser(
        "status",
        help="show a running server's workers (from its shared-memory scoreboard)",
        description="Show a running server's workers: state, requests, connections, "
        "restarts, memory, and the listen queue depth.",
    )
    which = status.add_mutually_exclusive_group(required=True)
    which.add_argument("--pid", type=int, help="the primary's pid")
    which.add_argument("--pid-file", help="the file given to `run --pid-file`")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    from tailfast.bench.cli import add_bench_parser

    add_bench_parser(commands)
    return parser


def run_command(args: argparse.Namespace) -> int:
    from tailfast.app import app_reloader, detect_interface, import_app, parse_app_spec
    from tailfast.config import Config, load_config
    from tailfast.server import ConfigSource, export_file_environ, run

    cli = {name: getattr(args, name) for name in args.setting_names}
    # before .env values are exported into it: SIGHUP reads the files again over this
    source = ConfigSource(cli, dict(os.environ), os.getcwd())
    config = load_config(cli)
    # parsed here, before any fork: a malformed spec is a start-up error (exit 2)
    spec = parse_app_spec(args.app, config.factory)
    export_file_environ(config)
    # one per value of --factory, which a SIGHUP may change; both made before any import
    import_fresh = {factory: app_reloader(parse_app_spec(args.app, factory))
                    for factory in (False, True)}

    def hook(spec: str) -> Callable[[int], Any] | None:
        return import_app(spec) if spec else None

    def load(now: Config) -> tuple[Callable[..., Any], Callable[[int], Any] | None,
                                   Callable[[int], Any] | None]:
        # hooks after the app: a reload has just dropped the app's modules
        app = import_fresh[now.factory]()
        detect_interface(app, now.interface)  # an undetectable app fails here
        return app, hook(now.on_worker_start), hook(now.on_worker_exit)

    if not config.preload:
        return run(None, config, reload=load, name=args.app, source=source)
    app = import_app(spec)
    detect_interface(app, config.interface)  # an undetectable app fails before any fork
    start_hook, exit_hook = hook(config.on_worker_start), hook(config.on_worker_exit)
    return run(app, config, start_hook, reload=load, on_worker_exit=exit_hook, name=args.app,
               source=source)


def status_command(args: argparse.Namespace) -> int:
    from tailfast.status import format_table, read_status

    snapshot = read_status(pid=args.pid, pid_file=args.pid_file)
    if args.json:
        import json

        print(json.dumps(snapshot, indent=2))
    else:
        print(format_table(snapshot))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return run_command(args)
        if args.command == "status":
            return status_command(args)
        if args.command == "bench":
            return int(args.bench_main(args))
    except TailfastError as exc:
        details = getattr(exc, "details", "")
        print(f"tailfast: {exc}", file=sys.stderr)
        if details:  # the application's traceback (an error inside its code)
            print(details, end="", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
