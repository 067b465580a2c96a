"""tailfast: Python web handlers on every core, with the hot path in C."""

from tailfast._core import FileResponse, Request, Response, get_worker_id, is_primary
from tailfast.errors import (
    BadRequest,
    BodyTimeout,
    ClientDisconnected,
    HTTPError,
    PayloadTooLarge,
    RequestTimeout,
)
from tailfast.headers import Headers, QueryParams
from tailfast.server import serve
from tailfast.supervise import spawn_workers

__all__ = [
    "BadRequest",
    "BodyTimeout",
    "ClientDisconnected",
    "FileResponse",
    "HTTPError",
    "Headers",
    "PayloadTooLarge",
    "QueryParams",
    "Request",
    "RequestTimeout",
    "Response",
    "get_worker_id",
    "is_primary",
    "serve",
    "spawn_workers",
]
__version__ = "0.1.0"
