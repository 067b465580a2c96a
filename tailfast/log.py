"""The Python side's log lines: "tailfast: <message>" on stderr, at or above --log-level.

Levels are numbered as in the logging module. The primary sets the level
before it forks, so its workers inherit it; the C core keeps its own copy
(tf_log_set_level), set from the same setting.
"""

from __future__ import annotations

import sys
import traceback

DEBUG = 10
INFO = 20
WARNING = 30
ERROR = 40

# --log-level's choices, lowest first
LEVELS: dict[str, int] = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}

_level = INFO


def set_level(level: int) -> None:
    """Lines below level are not written from now on (in this process and its later forks)."""
    global _level
    _level = level


def log(message: str, level: int = INFO, with_traceback: bool = False) -> None:
    """Writes "tailfast: <message>" (and the exception being handled, when asked)
    to stderr in one write when level is enabled."""
    if level < _level:
        return
    text = f"tailfast: {message}\n"
    if with_traceback:
        text += traceback.format_exc()
    sys.stderr.write(text)
    sys.stderr.flush()
