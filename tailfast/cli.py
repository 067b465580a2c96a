"""The `tailfast` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tailfast.errors import TailfastError


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
        description="Serve MODULE:CALLABLE (a handler(request) or a WSGI app) with a "
        "primary process and one worker per CPU. Every option can also be set by its "
        "environment variable or in .env / .env.<mode>.",
    )
    run.add_argument("app", metavar="MODULE:CALLABLE", help="the application, e.g. myapp:app")
    add_arguments(run)
    run.set_defaults(setting_names=[s.name for s in SETTINGS])
    from tailfast.bench.cli import add_bench_parser

    add_bench_parser(commands)
    return parser


def run_command(args: argparse.Namespace) -> int:
    from tailfast.app import detect_interface, import_app
    from tailfast.config import load_config
    from tailfast.server import export_file_environ, run

    config = load_config({name: getattr(args, name) for name in args.setting_names})
    export_file_environ(config)
    app = import_app(args.app)
    detect_interface(app, config.interface)  # rejects async handlers before any fork
    return run(app, config)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return run_command(args)
        if args.command == "bench":
            return int(args.bench_main(args))
    except TailfastError as exc:
        print(f"tailfast: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
