"""ASGI WebSocket test applications: echo, reject, deny, close codes, scope, flood, lazy reader."""

from __future__ import annotations

import asyncio
import json
from typing import Any

_closes: list[int] = []  # websocket.disconnect codes seen by /echo, reported over HTTP
_release: list[asyncio.Event] = []  # /lazy waits on it; GET /release sets it


async def _lazy(receive: Any, send: Any) -> None:
    """Receives nothing until GET /release, then counts messages until "end"."""
    await send({"type": "websocket.accept"})
    if not _release:
        _release.append(asyncio.Event())
    await _release[0].wait()
    count = 0
    while (await receive()).get("text") != "end":
        count += 1
    await send({"type": "websocket.send", "text": str(count)})
    await receive()


async def _echo(receive: Any, send: Any, scope: dict) -> None:
    offered = scope["subprotocols"]
    chosen = next((p for p in offered if p in ("chat", "superchat")), None)
    await send({"type": "websocket.accept", "subprotocol": chosen,
                "headers": [(b"x-ws", b"yes")]})
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            _closes.append(event["code"])
            return
        if event.get("text") is not None:
            await send({"type": "websocket.send", "text": event["text"]})
        else:
            await send({"type": "websocket.send", "bytes": event["bytes"]})


async def _flood(receive: Any, send: Any) -> None:
    """Sends N messages of SIZE bytes as asked ("N SIZE"), then "done"."""
    await send({"type": "websocket.accept"})
    event = await receive()
    count, size = (int(x) for x in event["text"].split())
    for i in range(count):
        await send({"type": "websocket.send", "bytes": bytes([i % 256]) * size})
    await send({"type": "websocket.send", "text": "done"})
    await receive()


async def _deny(path: str, send: Any) -> None:
    """Answers with an HTTP response instead of the accept (the WebSocket
    Denial Response extension): whole, streamed in parts, or streamed to
    the end of a large body."""
    headers = [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]
    await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
    if path == "/deny":
        await send({"type": "websocket.http.response.body", "body": b"no token"})
        return
    if path == "/deny-then-accept":
        await send({"type": "websocket.accept"})  # refused: raises, nothing was sent
    size = 64 * 1024 if path == "/deny-large" else 3
    for part in (b"no", b" ", b"token"):
        await send({"type": "websocket.http.response.body", "body": part * size,
                    "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b""})


async def _websocket(scope: dict, receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/echo":
        await _echo(receive, send, scope)
    elif path == "/reject":
        await send({"type": "websocket.close"})
    elif path == "/raise":
        raise RuntimeError("refused by raising")
    elif path == "/close":
        await send({"type": "websocket.accept"})
        await receive()
        try:
            await send({"type": "websocket.close", "code": 1005})  # reserved: refused
        except ValueError:
            await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
    elif path == "/scope":
        await send({"type": "websocket.accept"})
        shown = {k: v for k, v in scope.items() if k not in ("headers", "state")}
        shown["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
        shown["raw_path"] = scope["raw_path"].decode()
        shown["query_string"] = scope["query_string"].decode()
        shown["state"] = dict(scope["state"])
        await send({"type": "websocket.send", "text": json.dumps(shown)})
        await receive()
    elif path.startswith("/deny"):
        await _deny(path, send)
    elif path == "/lazy":
        await _lazy(receive, send)
    elif path == "/flood":
        await _flood(receive, send)
    else:
        await send({"type": "websocket.close", "code": 4404})


async def app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    if scope["type"] != "http":
        raise RuntimeError("no lifespan")
    body = json.dumps(_closes).encode() if scope["path"] == "/closes" else b"plain http"
    if scope["path"] == "/release":
        if not _release:
            _release.append(asyncio.Event())
        _release[0].set()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
