"""ASGI apps and async handlers that misbehave or meet stalled clients (test_asgi_limits)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

Scope = dict[str, Any]

SEEN: list[str] = []  # what the requests saw (reported by /seen)


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def _try_send(send: Any, message: dict) -> str:
    try:
        await send(message)
    except OSError as exc:
        return type(exc).__name__
    return "sent"


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """Routes by path; records what happened in SEEN."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/upload":
        # reads until the end or a disconnect, then tries to answer
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                outcome = await _try_send(send, {"type": "http.response.start", "status": 200,
                                                 "headers": []})
                SEEN.append(f"upload:disconnect:{total}:{outcome}")
                return
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                await _answer(send, 200, str(total).encode())
                return
    elif path == "/upload-streaming":
        # starts the answer first, then reads the body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started", "more_body": True})
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                SEEN.append(f"upload-streaming:{message['type']}")
                break
        await send({"type": "http.response.body", "body": b""})
    elif path == "/endless":
        # streams until send() fails
        await send({"type": "http.response.start", "status": 200, "headers": []})
        block = b"x" * 65536
        sent = 0
        try:
            while sent < 512 * 1024 * 1024:
                await send({"type": "http.response.body", "body": block, "more_body": True})
                sent += len(block)
        except OSError as exc:
            SEEN.append(f"endless:{type(exc).__name__}")
            raise
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream-and-listen":
        await _stream_and_listen(receive, send, int(scope["query_string"] or b"8192"))
    elif path == "/block":
        time.sleep(float(scope["query_string"] or b"3"))  # no await: an eager step overruns
        await _answer(send, 200, b"too late")
    elif path == "/block-later":
        await asyncio.sleep(0)
        time.sleep(3)  # in a Task's step: the loop is blocked
        await _answer(send, 200, b"too late")
    elif path == "/seen":
        await _answer(send, 200, json.dumps(SEEN).encode())
    elif path == "/hello":
        await _answer(send, 200, b"hello")
    else:
        await _misbehave(path, send)


async def _stream_and_listen(receive: Any, send: Any, blocks: int) -> None:
    """Streams blocks of 64 KiB in a task (by default 512 MiB: far more than
    a stalled client holds) while awaiting receive() for the disconnect, as
    Starlette's StreamingResponse does."""
    async def stream() -> None:
        block = b"y" * 65536
        try:
            for _ in range(blocks):
                await send({"type": "http.response.body", "body": block, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except OSError as exc:
            SEEN.append(f"stream-and-listen:send:{type(exc).__name__}")

    await send({"type": "http.response.start", "status": 200, "headers": []})
    streaming = asyncio.ensure_future(stream())
    message = await receive()  # the (empty) body
    while message["type"] == "http.request":
        message = await receive()
    SEEN.append(f"stream-and-listen:receive:{message['type']}:{time.monotonic():.3f}")
    await streaming


async def _misbehave(path: str, send: Any) -> None:
    """Invalid ASGI message sequences."""
    start = {"type": "http.response.start", "status": 200, "headers": []}
    if path == "/wrong-type":
        await send({"type": "http.response.nonsense"})
    elif path == "/start-twice":
        await send(start)
        await send(start)
    elif path == "/body-before-start":
        await send({"type": "http.response.body", "body": b"early"})
    elif path == "/str-headers":
        await send({"type": "http.response.start", "status": 200, "headers": [("x-a", "b")]})
        await send({"type": "http.response.body", "body": b"never"})
    elif path == "/bad-status":
        await send({"type": "http.response.start", "status": "200", "headers": []})
        await send({"type": "http.response.body", "body": b"never"})
    elif path == "/bad-length":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"many")]})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
    elif path == "/after-complete":
        await _answer(send, 200, b"complete")
        await send({"type": "http.response.body", "body": b"more"})
    elif path == "/invalid-mid-stream":
        await send(start)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 500, "headers": []})
    else:
        await _answer(send, 404, b"not found")


async def handler(request: Any) -> Any:
    """A native async handler reading its body after its first await."""
    if request.path == "/block":
        time.sleep(3)  # no await: the eager step overruns
        return "too late"
    await asyncio.sleep(0)
    if request.path == "/block-later":
        time.sleep(3)  # in a Task's step: the loop is blocked
        return "too late"
    if request.path == "/read":
        body = await request.read()
        assert request.body is body
        return f"{len(body)} {sum(body) % 997}"
    if request.path == "/body":
        return str(len(request.body))
    if request.path == "/stream":
        return str(sum(len(c) for c in request.stream()))
    return "hello"
