"""tailfast: Python web handlers on every core, with the hot path in C."""

from tailfast._core import FileResponse, Request, Response, get_worker_id, is_primary
from tailfast.errors import BadRequest, ClientDisconnected, HTTPError
from tailfast.headers import Headers, QueryParams
from tailfast.server import serve
from tailfast.supervise import spawn_workers

__all__ = [
    "BadRequest",
    "ClientDisconnected",
    "FileResponse",
    "HTTPError",
    "Headers",
    "QueryParams",
    "Request",
    "Response",
    "get_worker_id",
    "is_primary",
    "serve",
    "spawn_workers",
]
__version__ = "0.1.0"
