"""A FastAPI app served unchanged over ASGI: `tailfast run examples.fastapi_app:app`.

Path and query parameters, JSON and form bodies, cookies, redirects, a
streamed response, background tasks, HTTPException, a plain `def` route (run
on FastAPI's thread pool), state set up by the lifespan, once per worker, and
a WebSocket route.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import (
    BackgroundTasks,
    Cookie,
    FastAPI,
    Form,
    HTTPException,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import PlainTextResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel

DONE: list[str] = []  # what background tasks finished, in this worker


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"started_by": "lifespan", "pid": os.getpid()}  # request.state in every request


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/", response_class=PlainTextResponse)
async def index() -> str:
    return "Hello from FastAPI!"


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None, limit: int = 10) -> dict[str, Any]:
    return {"item_id": item_id, "q": q, "limit": limit}


@app.post("/items")
async def create_item(item: Item) -> dict[str, Any]:
    return {"created": item.model_dump(), "total": item.price * 2}


@app.post("/login")
async def login(username: str = Form(), password: str = Form()) -> dict[str, Any]:
    return {"user": username, "password_length": len(password)}


@app.get("/cookie/set")
async def set_cookie(response: Response) -> dict[str, str]:
    response.set_cookie("session", "abc123", httponly=True)
    return {"set": "session"}


@app.get("/cookie/read")
async def read_cookie(session: str | None = Cookie(default=None)) -> dict[str, Any]:
    return {"session": session}


@app.get("/redirect")
async def redirect() -> RedirectResponse:
    return RedirectResponse("/items/1?q=redirected", status_code=307)


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    async def numbers() -> AsyncIterator[bytes]:
        for i in range(n):
            await asyncio.sleep(0.001)
            yield f"line {i}\n".encode()

    return StreamingResponse(numbers(), media_type="text/plain")


@app.post("/background")
async def background(tasks: BackgroundTasks, name: str = "job") -> dict[str, str]:
    async def work() -> None:
        await asyncio.sleep(0.01)
        DONE.append(name)

    tasks.add_task(work)
    return {"queued": name}


@app.get("/background/done")
async def background_done() -> list[str]:
    return DONE


@app.get("/missing/{key}")
async def missing(key: str) -> None:
    raise HTTPException(status_code=404, detail=f"no such key: {key}",
                        headers={"X-Error": "missing"})


@app.get("/sync")
def sync_route() -> dict[str, Any]:
    # a plain def: FastAPI runs it on its thread pool, not on the event loop
    return {"thread_is_main": threading.current_thread() is threading.main_thread()}


@app.get("/state")
async def state(request: Request) -> dict[str, Any]:
    return {"started_by": request.state.started_by}


@app.get("/sleep")
async def sleep(s: float = 0.02) -> dict[str, float]:
    await asyncio.sleep(s)
    return {"slept": s}


@app.websocket("/ws/{room}")
async def chat(websocket: WebSocket, room: str) -> None:
    """Echoes text and bytes with the room's name; "bye" closes with 4002;
    room "private" is refused before the accept (403), room "paid" with an
    HTTP response of its own (the ASGI WebSocket Denial Response extension)."""
    if room == "private":
        await websocket.close(code=1008)
        return
    if room == "paid":
        await websocket.send_denial_response(
            PlainTextResponse("payment required", status_code=402, headers={"x-plan": "free"}))
        return
    offered = websocket.scope["subprotocols"]
    await websocket.accept(subprotocol="chat" if "chat" in offered else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "bye":
                await websocket.close(code=4002, reason="asked to")
                return
            if message.get("text") is not None:
                await websocket.send_text(f"{room}: {message['text']}")
            else:
                await websocket.send_bytes(room.encode() + b": " + message["bytes"])
    except WebSocketDisconnect:
        return
