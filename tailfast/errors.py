"""The exceptions tailfast raises for problems a user can fix."""

from __future__ import annotations


class TailfastError(Exception):
    """Base class: the CLI prints `tailfast: <message>` and exits with status 2."""


class ConfigError(TailfastError):
    """A bad setting (flag, environment variable or .env line), or a socket that cannot listen."""


class AppImportError(TailfastError):
    """The MODULE:CALLABLE application could not be imported or is not callable."""


class RequestTimeout(BaseException):
    """Raised inside a handler that ran longer than --timeout; the client gets a 503.

    A BaseException, like KeyboardInterrupt, so that a handler's `except
    Exception` does not swallow it; `finally` blocks and context managers run."""
