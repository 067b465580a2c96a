"""The exceptions tailfast raises for problems a user can fix."""

from __future__ import annotations


class TailfastError(Exception):
    """Base class: the CLI prints `tailfast: <message>` and exits with status 2."""


class ConfigError(TailfastError):
    """A bad setting (flag, environment variable or .env line), or a socket that cannot listen."""


class AppImportError(TailfastError):
    """The MODULE:CALLABLE application could not be imported or is not callable."""
