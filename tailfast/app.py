"""Importing the application named on the command line (`module:callable`)."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import sysconfig
from collections.abc import Callable
from typing import Any

from tailfast.errors import AppImportError


def import_app(spec: str) -> Callable[..., Any]:
    """Imports `module:attribute` (attribute defaults to `app`) from the working
    directory or sys.path. Any failure is one AppImportError line."""
    module_name, _, attr_path = spec.partition(":")
    attr_path = attr_path or "app"
    if not module_name:
        raise AppImportError(f"invalid application {spec!r}: expected MODULE:CALLABLE")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise AppImportError(f"cannot import {attr_path!r} from {module_name!r}: {exc}") from exc
    except BaseException as exc:  # the module itself raised while importing
        raise AppImportError(
            f"cannot import {attr_path!r} from {module_name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise AppImportError(
                f"cannot import {attr_path!r} from {module_name!r}: "
                f"module {module_name!r} has no attribute {attr_path!r}"
            ) from exc
    if not callable(target):
        raise AppImportError(
            f"{module_name}:{attr_path} is not callable (it is a {type(target).__name__})"
        )
    return target


def detect_interface(app: Callable[..., Any], requested: str = "auto") -> str:
    """'native' for handler(request), 'wsgi' for app(environ, start_response)."""
    call_method = vars(type(app)).get("__call__")
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call_method):
        raise AppImportError("async def handlers are not supported yet; use a plain def")
    if requested != "auto":
        return requested
    try:
        params = list(inspect.signature(app).parameters.values())
    except (TypeError, ValueError):
        return "native"  # no signature to read (some builtins): assume handler(request)
    required = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    optional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
    ]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    if len(required) == 2:
        return "wsgi"
    if len(required) == 1 or (not required and optional and not varargs):
        return "native"
    name = getattr(app, "__qualname__", type(app).__name__)
    raise AppImportError(
        f"cannot tell how to call {name}{inspect.signature(app)}: expected handler(request) "
        "or a WSGI app(environ, start_response); choose with --interface native|wsgi"
    )


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs)


def app_reloader(spec: str) -> Callable[[], Callable[..., Any]]:
    """A function that imports spec again as it is on disk now.

    Call it before the first import_app(spec): modules imported after that
    point, except the standard library, installed packages and tailfast
    itself, are the application's, and are dropped from sys.modules before
    importing again, so a deploy's changed modules are all read fresh."""
    baseline = set(sys.modules)
    libraries = _library_dirs()

    def is_application(name: str, module: object) -> bool:
        if name in baseline or name == "tailfast" or name.startswith("tailfast."):
            return False
        filename = getattr(module, "__file__", None)
        if not filename:
            return False
        real = os.path.realpath(filename)
        return not real.startswith(libraries)

    def reload() -> Callable[..., Any]:
        for name, module in list(sys.modules.items()):
            if is_application(name, module):
                del sys.modules[name]
        importlib.invalidate_caches()
        return import_app(spec)

    return reload
