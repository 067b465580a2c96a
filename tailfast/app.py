"""Importing the application named on the command line (`module:callable`)."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tailfast.errors import AppImportError


@dataclass(frozen=True)
class AppSpec:
    """A parsed MODULE:ATTRIBUTE, with the factory call's literal arguments
    when there is one (MODULE:create_app("production") or --factory)."""

    text: str  # as given, for messages
    module: str
    attr: str  # dotted attribute path
    factory: bool = False
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _literal(node: ast.expr, spec: str) -> Any:
    # literal_eval reads literals only (strings, numbers, True/False/None and
    # their containers): nothing in the text is ever run as code.
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise AppImportError(
            f"invalid application {spec!r}: factory arguments must be literals "
            f"(strings, numbers, True, False, None), not {ast.unparse(node)!r}"
        ) from None


def parse_app_spec(spec: str, factory: bool = False) -> AppSpec:
    """Parses MODULE[:ATTRIBUTE[(LITERAL ARGUMENTS)]] without evaluating it;
    factory=True (--factory) calls ATTRIBUTE with no arguments."""
    module_name, _, attr_text = spec.partition(":")
    attr_text = attr_text.strip() or "app"
    if not module_name or not all(p.isidentifier() for p in module_name.split(".")):
        raise AppImportError(f"invalid application {spec!r}: expected MODULE:CALLABLE")
    if "(" not in attr_text:
        if not all(p.isidentifier() for p in attr_text.split(".")):
            raise AppImportError(f"invalid application {spec!r}: expected MODULE:CALLABLE")
        return AppSpec(spec, module_name, attr_text, factory)
    try:
        call = ast.parse(attr_text, mode="eval").body
    except SyntaxError:
        call = None
    attr = _dotted_name(call.func) if isinstance(call, ast.Call) else None
    if call is None or not isinstance(call, ast.Call) or attr is None:
        raise AppImportError(
            f"invalid application {spec!r}: expected MODULE:CALLABLE or "
            "MODULE:FACTORY(literal arguments)"
        )
    for node in [*call.args, *call.keywords]:
        if isinstance(node, ast.Starred) or (isinstance(node, ast.keyword) and node.arg is None):
            raise AppImportError(f"invalid application {spec!r}: no * or ** arguments")
    args = tuple(_literal(a, spec) for a in call.args)
    kwargs = {k.arg: _literal(k.value, spec) for k in call.keywords if k.arg is not None}
    return AppSpec(spec, module_name, attr, True, args, kwargs)


def import_app(spec: str | AppSpec, factory: bool = False) -> Callable[..., Any]:
    """Imports `module:attribute` (attribute defaults to `app`) from the working
    directory or sys.path, and calls it when it names a factory. A missing
    module or attribute is one AppImportError line; an error inside the
    application's code also carries its traceback (AppImportError.details)."""
    parsed = spec if isinstance(spec, AppSpec) else parse_app_spec(spec, factory)
    module_name, attr_path = parsed.module, parsed.attr
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # the module is missing, or its code raised
        raise _import_failure(exc, module_name, attr_path) from exc
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
    return _call_factory(parsed, target) if parsed.factory else target


def _call_factory(spec: AppSpec, factory: Callable[..., Any]) -> Callable[..., Any]:
    try:
        app = factory(*spec.args, **spec.kwargs)
    except BaseException as exc:  # the factory is application code: show where it failed
        error = AppImportError(
            f"cannot create the application with {spec.text}: {type(exc).__name__}: {exc}"
        )
        error.details = application_traceback(exc)
        raise error from exc
    if not callable(app):
        raise AppImportError(
            f"{spec.text} returned a {type(app).__name__}, not a callable application"
        )
    return app


def _import_failure(exc: BaseException, module_name: str, attr_path: str) -> AppImportError:
    """One line when the named module itself (or its package) is missing; the
    application's traceback too when the error is inside its code."""
    prefix = f"cannot import {attr_path!r} from {module_name!r}"
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if missing and (module_name == missing or module_name.startswith(missing + ".")):
        return AppImportError(f"{prefix}: {exc}")
    error = AppImportError(f"{prefix}: {type(exc).__name__}: {exc}")
    error.details = application_traceback(exc)
    return error


def _is_machinery(filename: str) -> bool:
    """Frames of tailfast and of the import system, which say nothing about
    where the application went wrong."""
    if filename.startswith("<frozen "):
        return True
    own = (os.path.dirname(__file__), os.path.dirname(importlib.__file__))
    real = os.path.realpath(filename)
    return any(real.startswith(os.path.join(os.path.realpath(d), "")) for d in own)


def application_traceback(exc: BaseException) -> str:
    """exc's traceback (and its chained exceptions') without tailfast's and
    importlib's frames, formatted like Python's own."""
    top = traceback.TracebackException.from_exception(exc)
    todo, seen = [top], set()
    while todo:
        te = todo.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        kept = [f for f in te.stack if not _is_machinery(f.filename)]
        te.stack = traceback.StackSummary.from_list(kept)
        todo += [t for t in (te.__cause__, te.__context__) if t is not None]
    return "".join(top.format())


def _positional(app: Callable[..., Any]) -> tuple[int, int, bool] | None:
    """(required, optional, *args) positional parameters of app; None when
    there is no signature to read (some builtins)."""
    try:
        params = list(inspect.signature(app).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = sum(1 for p in params if p.kind in positional and p.default is p.empty)
    optional = sum(1 for p in params if p.kind in positional and p.default is not p.empty)
    return required, optional, any(p.kind is p.VAR_POSITIONAL for p in params)


def is_coroutine_callable(app: Callable[..., Any]) -> bool:
    """app is an async def function, or an object whose __call__ is one."""
    if inspect.iscoroutinefunction(app):
        return True
    call_method = vars(type(app)).get("__call__") or type(app).__call__
    return not inspect.isfunction(app) and inspect.iscoroutinefunction(call_method)


def detect_interface(app: Callable[..., Any], requested: str = "auto") -> str:
    """'native' for handler(request) (def or async def), 'wsgi' for
    app(environ, start_response), 'asgi' for an ASGI 3 app(scope, receive, send):
    a coroutine function of three arguments, or an object whose __call__ is one."""
    if requested != "auto":
        return requested
    shape = _positional(app)
    if shape is None:
        return "native"  # assume handler(request)
    required, optional, varargs = shape
    if is_coroutine_callable(app):
        if required == 3 or (required < 3 <= required + optional):
            return "asgi"
        if required == 1 or (not required and optional and not varargs):
            return "native"
    elif required == 2:
        return "wsgi"
    elif required == 1 or (not required and optional and not varargs):
        return "native"
    name = getattr(app, "__qualname__", type(app).__name__)
    raise AppImportError(
        f"cannot tell how to call {name}{inspect.signature(app)}: expected handler(request), "
        "a WSGI app(environ, start_response) or an ASGI app(scope, receive, send); "
        "choose with --interface native|wsgi|asgi"
    )


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs)


def app_reloader(spec: str | AppSpec) -> Callable[[], Callable[..., Any]]:
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
