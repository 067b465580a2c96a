"""The exceptions tailfast raises for problems a user can fix."""

from __future__ import annotations


class TailfastError(Exception):
    """Base class: the CLI prints `tailfast: <message>` and exits with status 2."""


class ConfigError(TailfastError):
    """A bad setting (flag, environment variable or .env line), or a socket that cannot listen."""


class AppImportError(TailfastError):
    """The MODULE:CALLABLE application could not be imported or is not callable.

    details: the application's traceback when the error happened inside its
    own code (printed after the one-line message), else empty."""

    details: str = ""


class HTTPError(Exception):
    """Raised by a handler (or by Request.json()) to answer with status and a
    short plain-text message instead of a 500; nothing is logged."""

    status = 500

    def __init__(self, message: str = "", status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(HTTPError, ValueError):
    """The request cannot be understood, e.g. a body that is not valid JSON: 400."""

    status = 400


class ClientDisconnected(OSError):
    """The client went away (or stalled past the timeout) while a body was streamed to
    it, or before the request body it was sending ended (a read of the body raises it)."""


class BodyTimeout(HTTPError, TimeoutError):
    """No request body bytes arrived for --body-timeout while the application read: 408."""

    status = 408


class PayloadTooLarge(HTTPError):
    """A chunked request body grew past --limit-request-body while being read: 413."""

    status = 413


class RequestTimeout(BaseException):
    """Raised inside a handler that ran longer than --timeout; the client gets a 503.

    A BaseException, like KeyboardInterrupt, so that a handler's `except
    Exception` does not swallow it; `finally` blocks and context managers run."""
