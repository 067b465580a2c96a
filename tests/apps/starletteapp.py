"""A Starlette app for tests/test_asgi_frameworks.py: routes, middleware, streams, lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route


class Tag(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["X-Tagged"] = "yes"
        return response


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"db": "connected"}


async def home(request: Request) -> Response:
    return PlainTextResponse("Hello from Starlette!")


async def user(request: Request) -> Response:
    return JSONResponse({"user": request.path_params["name"], "q": dict(request.query_params),
                         "db": request.state.db})


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body[::-1], media_type="application/octet-stream")


async def form(request: Request) -> Response:
    data = await request.form()
    return JSONResponse({k: str(v) for k, v in data.items()})


async def stream(request: Request) -> Response:
    async def parts() -> AsyncIterator[str]:
        for i in range(4):
            await asyncio.sleep(0)
            yield f"part {i}\n"

    return StreamingResponse(parts(), media_type="text/plain")


async def moved(request: Request) -> Response:
    return RedirectResponse("/users/moved", status_code=301)


async def boom(request: Request) -> Response:
    raise RuntimeError("starlette boom")


app = Starlette(
    routes=[Route("/", home), Route("/users/{name}", user), Route("/echo", echo, methods=["POST"]),
            Route("/form", form, methods=["POST"]), Route("/stream", stream),
            Route("/moved", moved), Route("/boom", boom)],
    middleware=[Middleware(Tag)],
    lifespan=lifespan,
)
